// The operator console: alarms to acknowledge, shelve and comment; the network map; the card
// of the object clicked (live values, open alarms and commands, the command buttons with the
// select → confirm → operate dialog); trends over the historian with zoom.
"use strict";

(() => {
  const $ = id => document.getElementById(id);
  const esc = Gasops.escape;
  const ACTING_ROLES = ["admin", "dispatcher", "operator"];
  const ALARMS = `query { activeAlarms(minPriority: low) {
    id tag priority areaId assetId status active message since activatedAt shelvedUntil } }`;
  const COMMAND = `id targetKind assetId action value state outcome needsApproval needsOverride
    approvedBy expiresAt checks impact { consumersCutOff criticalCutOff minCriticalPressurePa method }`;
  const RESULT = `__typename ... on CommandSuccess { command { ${COMMAND} } }
    ... on CommandRefusal { message rule } ... on Forbidden { message }`;
  const SKZ_MODES = [[2, "auto potential"], [0, "constant current"], [1, "constant voltage"], [3, "off"]];
  const UNIT_SHOWN = { degC: "°C", "m3/h": "m³/h", m3: "m³" };  // as written in the tags → on screen
  const ACTIONS = {
    station: [["close", "Close outlet valve"], ["open", "Open outlet valve"], ["set_outlet_setpoint", "Set outlet set-point", "kPa"]],
    valve: [["close", "Close"], ["open", "Open"], ["set_position", "Set position", "%"]],
    skz: [["set_skz_mode", "Set mode", "mode"], ["set_skz_setpoint", "Set set-point", "V / A"]],
  };

  let net = null, user = null;
  let alarms = [];
  const alarmItems = new Map();
  let card = null;           // { kind, id, rows: Map(path → <tr>), unsubscribe }
  let pending = null;        // the command in the confirm dialog

  Gasops.requireLogin($("login"), ready, { title: "gasops — operator console" });

  async function ready(u) {
    user = u;
    $("login").hidden = true;
    $("app").hidden = false;
    $("user").textContent = `${u.username} (${u.role})`;
    $("signout").onclick = Gasops.signOut;
    net = new NetMap.NetworkMap($("map"), { user: u.username, onPick: openCard });
    await net.load();
    Gasops.subscribe(`subscription { stationStatus { stationId communicating pOut { value good } flow { value good } door { value good } } }`,
      {}, d => net.stationStatus(d.stationStatus));
    Gasops.subscribe(`subscription { alarmEvents(minPriority: low) { alarmId } }`, {}, alarmsChanged);
    Gasops.subscribe(`subscription { commandEvents { commandId step ts user state assetId detail } }`, {}, d => commandEvent(d.commandEvents));
    Gasops.onReconnect(refreshAlarms);
    refreshAlarms();
    trendInit();
    setInterval(() => { $("clock").textContent = new Date().toLocaleString([], { hour12: false }); }, 1000);
    window.addEventListener("hashchange", fromHash);
    fromHash();
  }

  // "#station/GRP-01" (the wall links here) opens that object's card.
  function fromHash() {
    const [kind, id] = decodeURIComponent(location.hash.slice(1)).split("/");
    if (!kind || !id) return;
    const entry = net.points.get(id);
    openCard(entry ? entry.point : { kind, id });
  }

  // --- alarms ---------------------------------------------------------------------------
  let alarmTimer = null;
  function alarmsChanged() { clearTimeout(alarmTimer); alarmTimer = setTimeout(refreshAlarms, 150); }

  async function refreshAlarms() {
    try { alarms = (await Gasops.gql(ALARMS)).activeAlarms; } catch (e) { console.warn("alarms", e); return; }
    Gasops.sortAlarms(alarms);
    net.alarms(alarms);
    const canAct = ACTING_ROLES.includes(user.role);
    Gasops.keyedList($("alarms"), alarmItems, alarms, {
      key: a => a.id,
      className: a => `prio-${a.priority} ${a.status}`,
      create: id => {
        const li = document.createElement("li");
        li.addEventListener("click", ev => alarmClick(ev, id));
        return li;
      },
      html: a => {
        const unack = a.status === "unack" || a.status === "rtn_unack";
        return `<span class="what">${esc(a.message || a.tag)}</span>
        <span class="when">${Gasops.time(a.activatedAt || a.since)}</span>
        <span class="where">${esc(a.tag)} · ${esc(a.status)}${a.shelvedUntil ? ` · shelved until ${Gasops.time(a.shelvedUntil)}` : ""}</span>
        ${canAct ? `<span class="actions">${unack ? `<button type="button" data-act="ack">Acknowledge</button>` : ""}
          ${a.shelvedUntil ? "" : `<button type="button" data-act="shelve">Shelve</button>`}
          <button type="button" data-act="comment">Comment</button></span>` : ""}`;
      },
    });
    $("alarm-count").textContent = String(alarms.length);
    if (card) openRequests();
  }

  async function alarmClick(ev, id) {
    const act = ev.target.dataset && ev.target.dataset.act;
    const a = alarms.find(x => x.id === id);
    if (!act) {  // the row itself: show the object
      if (a && a.assetId) {
        const entry = net.points.get(a.assetId);
        openCard(entry ? entry.point : { kind: a.tag.split("/")[0], id: a.assetId });
      }
      return;
    }
    let q, v;
    if (act === "ack") {
      q = `mutation($id: String!) { acknowledgeAlarm(alarmId: $id) { __typename ... on AlarmActionRefused { message } } }`;
      v = { id };
    } else if (act === "shelve") {
      const minutes = parseInt(prompt("Shelve for how many minutes?", "60"), 10);
      const reason = minutes > 0 ? prompt("Reason for shelving (kept in the journal)") : null;
      if (!reason) return;
      q = `mutation($id: String!, $m: Int!, $r: String!) { shelveAlarm(alarmId: $id, minutes: $m, reason: $r) { __typename ... on AlarmActionRefused { message } } }`;
      v = { id, m: minutes, r: reason };
    } else {
      const text = prompt("Comment");
      if (!text) return;
      q = `mutation($id: String!, $t: String!) { commentAlarm(alarmId: $id, text: $t) { __typename ... on AlarmActionRefused { message } } }`;
      v = { id, t: text };
    }
    try {
      const r = Object.values(await Gasops.gql(q, v))[0];
      if (r.__typename !== "AlarmActionSuccess") alert(r.message || r.__typename);
    } catch (e) { alert(e.message); }
    refreshAlarms();
  }

  // --- object and station card ----------------------------------------------------------
  async function openCard(obj) {
    if (card && card.unsubscribe) card.unsubscribe();
    card = { kind: obj.kind, id: obj.id, rows: new Map(), unsubscribe: null, log: [] };
    if (location.hash !== `#${obj.kind}/${obj.id}`) history.replaceState(null, "", `#${obj.kind}/${obj.id}`);
    const el = $("card");
    if (obj.kind === "pipe") {
      el.innerHTML = `<h3>Pipe ${esc(obj.name || obj.id)}</h3><table>
        ${[["id", obj.id], ["pressure level", obj.pressureLevel], ["area", obj.areaId], ["from", obj.fromNodeId], ["to", obj.toNodeId]]
          .map(([k, v]) => `<tr><td class="muted">${k}</td><td>${esc(v)}</td></tr>`).join("")}</table>`;
      return;
    }
    const actions = ACTING_ROLES.includes(user.role) ? ACTIONS[obj.kind] || [] : [];
    el.innerHTML = `<h3>${esc(obj.kind)} ${esc(obj.name || obj.id)}</h3>
      <p class="muted">${esc(obj.id)} · ${esc(obj.areaId || "")} ${obj.subtype ? "· " + esc(obj.subtype) : ""}
        ${obj.remotelyOperable === false ? "· manual (not remotely operable)" : ""}</p>
      <table class="values"><tbody id="card-values"><tr><td class="muted">loading…</td></tr></tbody></table>
      ${actions.length && obj.remotelyOperable !== false ? `<h2 style="margin-top:1rem">Commands</h2>
        <div class="commands">
          <input id="cmd-reason" placeholder="reason (required)" style="width:100%">
          ${actions.map(([a, label, unit]) => unit === "mode"
            ? `<select id="cmd-value-${a}">${SKZ_MODES.map(([v, n]) => `<option value="${v}">${n}</option>`).join("")}</select><button type="button" data-cmd="${a}">${label}</button>`
            : unit ? `<input id="cmd-value-${a}" type="number" step="any" placeholder="${unit}"><button type="button" data-cmd="${a}">${label}</button>`
              : `<button type="button" data-cmd="${a}">${label}</button>`).join("")}
        </div><p class="error" id="cmd-error"></p>` : ""}
      <h2 style="margin-top:1rem">Open alarms and commands</h2><ul id="card-open"></ul>
      <h2>Command steps</h2><ol class="log" id="card-log"></ol>`;
    el.querySelectorAll("button[data-cmd]").forEach(b => { b.onclick = () => select(b.dataset.cmd); });
    openRequests();
    let tags;
    try {
      tags = (await Gasops.gql(`query($a: [String!]) { tags(filter: {assetIds: $a}) { path unit description
        current { value good quality sourceTs } } }`, { a: [obj.id] })).tags;
    } catch (e) { $("card-values").innerHTML = `<tr><td class="bad">${esc(e.message)}</td></tr>`; return; }
    if (!card || card.id !== obj.id) return;
    const body = $("card-values");
    body.innerHTML = "";
    for (const t of tags) {
      const tr = document.createElement("tr");
      tr.dataset.path = t.path;
      tr.dataset.unit = t.unit;
      // pressures as each level's operators read them (kPa, bar; Pa inside); the value carries its unit
      const unit = t.unit === "Pa" ? "" : UNIT_SHOWN[t.unit] ?? t.unit;
      tr.innerHTML = `<td>${esc(t.path.split("/").pop())}</td><td class="muted">${esc(t.description)}</td><td class="v"></td><td class="muted">${esc(unit)}</td>`;
      body.appendChild(tr);
      card.rows.set(t.path, tr);
      if (t.current) reading(t.current);
    }
    if (!tags.length) body.innerHTML = `<tr><td class="muted">no telemetry</td></tr>`;
    trendTags(tags);
    card.unsubscribe = Gasops.subscribe(`subscription($a: [String!]) { tagUpdates(assetIds: $a, maxRate: 4) {
      updates { path value good quality sourceTs } } }`, { a: [obj.id] },
      d => d.tagUpdates.updates.forEach(reading));
  }

  function reading(r) {
    const tr = card && card.rows.get(r.path);
    if (!tr) return;
    const td = tr.querySelector(".v");
    const v = typeof r.value !== "number" ? String(r.value)
      : tr.dataset.unit === "Pa" ? Gasops.pressure(r.value)
        : Math.abs(r.value) >= 100 ? r.value.toFixed(0) : r.value.toFixed(2);
    td.textContent = r.good ? v : `${v} (${r.quality})`;
    td.classList.toggle("bad", !r.good);
    td.title = `source time ${r.sourceTs}`;
  }

  async function openRequests() {
    const ul = $("card-open");
    if (!ul || !card) return;
    const mine = alarms.filter(a => a.assetId === card.id);
    let cmds = [];
    try {
      cmds = (await Gasops.gql(`query { commands(first: 50, openOnly: true) { id assetId action state user } }`))
        .commands.filter(c => c.assetId === card.id);
    } catch (e) { /* a role without commands.read sees alarms only */ }
    ul.innerHTML = [...mine.map(a => `<li>alarm: ${esc(a.message || a.tag)} (${esc(a.status)})</li>`),
      ...cmds.map(c => `<li>command ${esc(c.action)} by ${esc(c.user)}: ${esc(c.state)}</li>`)].join("") || `<li class="muted">none</li>`;
  }

  function commandEvent(e) {
    if (pending && e.commandId === pending.id) dialogEvent(e);
    if (!card || e.assetId !== card.id) return;
    const ol = $("card-log");
    if (!ol) return;
    const li = document.createElement("li");
    li.innerHTML = `${Gasops.time(e.ts)} <b class="state-${esc(e.state || "")}">${esc(e.step)}</b> ${esc(e.user || "")} ${e.state ? "→ " + esc(e.state) : ""}`;
    ol.insertBefore(li, ol.firstChild);
    while (ol.children.length > 20) ol.lastChild.remove();
    openRequests();
  }

  // --- select → confirm → operate ---------------------------------------------------------
  async function select(action) {
    const err = $("cmd-error");
    err.textContent = "";
    const reason = $("cmd-reason").value.trim();
    if (!reason) { err.textContent = "give a reason: it goes into the audit log"; return; }
    const input = $(`cmd-value-${action}`);
    let value = null;
    if (input) {
      value = parseFloat(input.value);
      if (!Number.isFinite(value)) { err.textContent = "enter a value"; return; }
      if (action === "set_outlet_setpoint") value *= 1000;  // kPa on screen, Pa inside
    }
    let r;
    try {
      r = (await Gasops.gql(`mutation($k: String!, $a: String!, $act: String!, $v: Float, $r: String!) {
        selectCommand(targetKind: $k, assetId: $a, action: $act, value: $v, reason: $r) { ${RESULT} } }`,
        { k: card.kind, a: card.id, act: action, v: value, r: reason })).selectCommand;
    } catch (e) { err.textContent = e.message; return; }
    if (r.__typename !== "CommandSuccess") { err.textContent = `refused: ${r.message}`; return; }
    confirmDialog(r.command);
  }

  let countdown = null;
  function confirmDialog(cmd) {
    pending = cmd;
    const d = $("confirm");
    $("confirm-title").textContent = `${cmd.action.replace(/_/g, " ")} · ${cmd.targetKind} ${cmd.assetId}${cmd.value != null ? ` → ${cmd.value}` : ""}`;
    $("confirm-error").textContent = "";
    const im = cmd.impact;
    $("confirm-body").innerHTML = `
      <p>Checks passed:</p><ul class="checks">${cmd.checks.map(c => `<li>${esc(c)}</li>`).join("")}</ul>
      <p>Predicted impact (${esc(im.method)}): <b id="impact-cut">${im.consumersCutOff}</b> consumers cut off${im.criticalCutOff.length ? `, critical: <b>${im.criticalCutOff.map(esc).join(", ")}</b>` : ""}${im.minCriticalPressurePa != null ? `; lowest pressure at a critical consumer ${Gasops.pressure(im.minCriticalPressurePa)}` : ""}.</p>
      ${cmd.needsApproval ? `<p class="warn" id="needs-approval">High impact: a second person must approve (four-eyes) before you can operate.</p>` : ""}
      ${cmd.needsOverride ? `<p class="warn">Cuts off a critical consumer: needs the emergency override role.</p>` : ""}
      <p>State: <b id="confirm-state" class="state-${esc(cmd.state)}">${esc(cmd.state)}</b> <span id="confirm-outcome"></span></p>
      <p class="muted">Selection expires in <span id="confirm-expiry"></span> s.</p>`;
    $("confirm-operate").disabled = cmd.needsApproval && !cmd.approvedBy;
    $("confirm-operate").textContent = "Operate";
    $("confirm-cancel").textContent = "Cancel command";
    $("confirm-operate").onclick = operate;
    $("confirm-cancel").onclick = cancel;
    clearInterval(countdown);
    const tick = () => {
      const s = Math.max(0, Math.round((new Date(cmd.expiresAt).getTime() - Date.now()) / 1000));
      const el = $("confirm-expiry");
      if (el) el.textContent = String(s);
    };
    tick();
    countdown = setInterval(tick, 1000);
    if (!d.open) d.showModal();
  }

  function showState(cmd) {
    $("confirm-state").textContent = cmd.state;
    $("confirm-state").className = `state-${cmd.state}`;
    if (cmd.outcome) $("confirm-outcome").textContent = cmd.outcome;
    const done = ["succeeded", "failed", "cancelled", "expired"].includes(cmd.state);
    if (done) {
      clearInterval(countdown);
      $("confirm-operate").hidden = true;
      $("confirm-cancel").textContent = "Close";
      $("confirm-cancel").onclick = closeDialog;
    }
  }

  function dialogEvent(e) {
    if (e.state === "approved") {
      $("confirm-operate").disabled = false;
      const w = $("needs-approval");
      if (w) w.textContent = `Approved by ${e.user}.`;
    }
    if (e.state) showState({ state: e.state, outcome: e.detail && (e.detail.outcome || e.detail.reason) });
  }

  async function operate() {
    $("confirm-operate").disabled = true;
    $("confirm-state").textContent = "operating…";
    try {
      const r = (await Gasops.gql(`mutation($id: String!) { operateCommand(commandId: $id) { ${RESULT} } }`, { id: pending.id })).operateCommand;
      if (r.__typename !== "CommandSuccess") { $("confirm-error").textContent = `refused: ${r.message}`; $("confirm-operate").disabled = false; return; }
      showState(r.command);
    } catch (e) { $("confirm-error").textContent = e.message; $("confirm-operate").disabled = false; }
  }

  async function cancel() {
    try {
      await Gasops.gql(`mutation($id: String!) { cancelCommand(commandId: $id, reason: "cancelled in the confirm dialog") { __typename } }`, { id: pending.id });
    } catch (e) { console.warn(e); }
    closeDialog();
  }

  function closeDialog() {
    clearInterval(countdown);
    pending = null;
    $("confirm-operate").hidden = false;
    $("confirm").close();
  }

  // --- trends ---------------------------------------------------------------------------
  let plot = null, range = null, hours = 1;

  function trendInit() {
    document.querySelectorAll(".ranges button").forEach(b => {
      b.onclick = () => { hours = Number(b.dataset.h); range = null; trendLoad(); };
    });
    $("trend-tag").onchange = () => { range = null; trendLoad(); };
    window.addEventListener("resize", () => plot && plot.setSize(size()));
    setInterval(() => { if (!range) trendLoad(); }, 30000);  // follow "now" unless zoomed
  }

  function trendTags(tags) {
    const sel = $("trend-tag");
    const numeric = tags.filter(t => !/door|mode/.test(t.path));
    sel.innerHTML = numeric.map(t => `<option value="${esc(t.path)}">${esc(t.path)} (${esc(t.unit)})</option>`).join("");
    const pOut = numeric.find(t => t.path.endsWith("/p_out"));
    if (pOut) sel.value = pOut.path;
    range = null;
    trendLoad();
  }

  function size() {
    const el = $("trend");
    return { width: Math.max(200, el.clientWidth), height: Math.max(120, el.clientHeight - 40) };
  }

  async function trendLoad() {
    const path = $("trend-tag").value;
    if (!path) return;
    const end = range ? range[1] : Date.now();
    const start = range ? range[0] : end - hours * 3600e3;
    // About one point per pixel: raw values while they fit, averaged buckets beyond.
    const n = Math.min(2000, size().width);
    const spanS = (end - start) / 1000;
    const bucket = spanS > n ? Math.ceil(spanS / n) : null;
    let series;
    try {
      series = (await Gasops.gql(`query($p: [String!]!, $s: DateTime!, $e: DateTime!, $b: Int, $n: Int!) {
        history(paths: $p, start: $s, end: $e, bucketS: $b, maxPoints: $n) { path points { ts value } } }`,
        { p: [path], s: new Date(start).toISOString(), e: new Date(end).toISOString(), b: bucket, n: 2 * n })).history[0];
    } catch (e) { console.warn("history", e); return; }
    const xs = [], ys = [];
    for (const p of series ? series.points : []) { xs.push(new Date(p.ts).getTime() / 1000); ys.push(p.value); }
    const data = [xs, ys];
    if (plot && plot.series[1].label === path) {
      plot.setData(data);
      plot.setScale("x", { min: start / 1000, max: end / 1000 });
      return;
    }
    if (plot) plot.destroy();
    plot = new uPlot({
      ...size(),
      scales: { x: { time: true } },
      series: [{}, { label: path, stroke: "#4fc3f7", width: 1.5, spanGaps: false }],
      axes: [{ stroke: "#8fa3b5", grid: { stroke: "#244257" } }, { stroke: "#8fa3b5", grid: { stroke: "#244257" }, size: 70 }],
      cursor: { drag: { x: true, y: false, setScale: false } },
      hooks: {
        setSelect: [u => {
          if (u.select.width < 5) return;
          range = [u.posToVal(u.select.left, "x") * 1000, u.posToVal(u.select.left + u.select.width, "x") * 1000];
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          trendLoad();  // a zoom re-reads the historian at the finer resolution
        }],
      },
    }, data, $("trend"));
    plot.setScale("x", { min: start / 1000, max: end / 1000 });
    plot.over.addEventListener("dblclick", () => { range = null; trendLoad(); });
  }
})();
