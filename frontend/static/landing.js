// Shows the server's readiness checks; no third-party code, no request off this server.
(async () => {
  const table = document.getElementById("status");
  try {
    const r = await fetch("/ready");
    const body = await r.json();
    const rows = Object.entries(body.checks).map(([k, v]) =>
      `<tr><td>${k}</td><td class="${v === "ok" ? "ok" : "bad"}">${v}</td></tr>`);
    for (const [k, v] of Object.entries(body.services)) rows.push(`<tr><td>${k}</td><td>${v}</td></tr>`);
    table.innerHTML = rows.join("");
  } catch (e) {
    table.innerHTML = `<tr><td class="bad">server unreachable</td></tr>`;
  }
})();
