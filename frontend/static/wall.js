// The control-room wall: the network map with live station values, the twin's pressures,
// alarms, crews and suspected leaks, and a side panel (alarm list, leaks, gas inflow against
// last week, crews on duty). Everything arrives over subscriptions; snapshots are re-read after
// a reconnect. Leak localizations (twin jobs) are read every minute and soon after a leak alarm.
"use strict";

(() => {
  const $ = id => document.getElementById(id);
  const CREW_ROLES = ["admin", "dispatcher", "foreman", "engineer"];
  const ALARMS = `query { activeAlarms(minPriority: low) {
    id tag priority areaId assetId status active message since activatedAt } }`;
  const STATIONS = `subscription { stationStatus { stationId areaId communicating
    pOut { value good } flow { value good } door { value good } } }`;
  const TWIN = `subscription { networkStateUpdates { at status message iterations solveMs
    airTemperatureC totalDemandKgS nodes { id pressurePaGauge supplied }
    consumersBelowMinimum { id supplied critical } } }`;
  const CREWS = `subscription { crewPositions { crewId crewName lat lon accuracyM ts } }`;
  const LEAKS = `query { leakLocalizations(first: 30, status: "done") { id areaId finishedAt
    windowMinutes detected candidates { nodeId areaId lat lon leakKgS leakM3h score }
    regionNodeIds regionOutline } }`;
  const LEAK_SHOWN_MS = 6 * 3600 * 1000;    // a localization stays on the wall this long
  const LEAK_REFRESH_MS = 60 * 1000;
  const LEAK_AFTER_ALARM_MS = [5000, 20000]; // the server's localization takes a few seconds

  let net = null;
  const flows = new Map();        // station id → m³/h (good values only)
  let inflowStations = new Set(); // the stations whose flow is the town's inflow
  const alarmItems = new Map();   // alarm id → <li>
  const crewItems = new Map();    // crew id → { li, ts }
  const leakItems = new Map();    // area id ("" for the whole network) → <li>
  const leakShown = new Map();    // area id → the localization shown

  Gasops.requireLogin($("login"), ready, { title: "gasops — control-room wall" });

  async function ready(user) {
    $("login").hidden = true;
    $("app").hidden = false;
    $("user").textContent = `${user.username} (${user.role})`;
    $("signout").onclick = Gasops.signOut;
    net = new NetMap.NetworkMap($("map"), { user: user.username, onPick: popup });
    const m = await net.load();
    backgroundChoice();
    // Inflow is metered at the gas distribution stations (GRS) that take gas from the
    // transmission line; a network without GRS in the registry is fed by all its stations.
    const stations = m.points.filter(p => p.kind === "station");
    const grs = stations.filter(p => p.subtype === "GRS");
    inflowStations = new Set((grs.length ? grs : stations).map(p => p.id));

    Gasops.subscribe(STATIONS, {}, d => station(d.stationStatus));
    Gasops.subscribe(`subscription { alarmEvents(minPriority: low) { alarmId tag } }`, {}, d => {
      alarmsChanged();
      if (d.alarmEvents.tag.endsWith("/leak")) leakAlarm();
    });
    Gasops.subscribe(TWIN, {}, d => twin(d.networkStateUpdates));
    if (CREW_ROLES.includes(user.role)) {
      await crewList();
      Gasops.subscribe(CREWS, {}, d => crewPosition(d.crewPositions));
    } else {
      $("crews-box").hidden = true;
    }
    Gasops.onReconnect(() => { refreshAlarms(); lastWeek(); refreshLeaks(); });
    refreshAlarms();
    lastWeek();
    refreshLeaks();
    setInterval(lastWeek, 10 * 60 * 1000);
    setInterval(refreshLeaks, LEAK_REFRESH_MS);
    setInterval(tick, 1000);
    tick();
  }

  function backgroundChoice() {
    const sel = $("background");
    const opts = [["none (schematic)", NetMap.NONE], ...net.tileSources.map(s => [s.name, s.name])];
    sel.innerHTML = opts.map(([label, v]) => `<option value="${Gasops.escape(v)}">${Gasops.escape(label)}</option>`).join("");
    sel.value = net.useBackground(localStorage.getItem(net._tileKey()) || NetMap.NONE);
    sel.onchange = () => { sel.value = net.useBackground(sel.value); };
  }

  function tick() {
    $("clock").textContent = new Date().toLocaleString([], { hour12: false });
    const now = Date.now();
    for (const [, c] of crewItems) {
      const s = Math.round((now - new Date(c.ts).getTime()) / 1000);
      const text = c.ts ? (s < 90 ? `${s} s ago` : `${Math.round(s / 60)} min ago`) : "no position";
      if (c.ago.textContent !== text) c.ago.textContent = text;
    }
  }

  function stamp() { $("updated").textContent = `updated ${Gasops.time(new Date())}`; }

  // --- stations and inflow --------------------------------------------------------------
  function station(s) {
    net.stationStatus(s);
    if (s.flow && s.flow.good) flows.set(s.stationId, Number(s.flow.value)); else flows.delete(s.stationId);
    let total = 0, known = 0;
    for (const id of inflowStations) if (flows.has(id)) { total += flows.get(id); known += 1; }
    $("inflow-now").textContent = known ? Math.round(total).toLocaleString() : "—";
    $("inflow-now").dataset.value = known ? String(total) : "";
    compare();
    stamp();
  }

  async function lastWeek() {
    if (!inflowStations.size) return;
    const mid = Date.now() - 7 * 24 * 3600 * 1000;
    const paths = [...inflowStations].map(id => `station/${id}/flow`);
    try {
      const d = await Gasops.gql(`query($p: [String!]!, $s: DateTime!, $e: DateTime!) {
        history(paths: $p, start: $s, end: $e, bucketS: 3600, aggregate: "avg", maxPoints: 4) {
          path points { value } } }`,
        { p: paths, s: new Date(mid - 1800e3).toISOString(), e: new Date(mid + 1800e3).toISOString() });
      let total = 0, known = 0;
      for (const series of d.history) {
        const vals = series.points.map(p => p.value).filter(v => v != null);
        if (vals.length) { total += vals.reduce((a, b) => a + b, 0) / vals.length; known += 1; }
      }
      $("inflow-week").textContent = known ? Math.round(total).toLocaleString() : "no history";
      $("inflow-week").dataset.value = known ? String(total) : "";
      compare();
    } catch (e) { console.warn("history", e); }
  }

  function compare() {
    const now = parseFloat($("inflow-now").dataset.value), week = parseFloat($("inflow-week").dataset.value);
    const el = $("inflow-delta");
    if (Number.isFinite(now) && Number.isFinite(week) && week > 0) {
      const pct = (now / week - 1) * 100;
      el.textContent = `(${pct >= 0 ? "+" : ""}${pct.toFixed(1)} %)`;
      el.className = pct >= 0 ? "delta-up" : "delta-down";
    } else el.textContent = "";
  }

  // --- alarms ---------------------------------------------------------------------------
  let alarmTimer = null;
  function alarmsChanged() {  // many events in a burst → one re-read
    clearTimeout(alarmTimer);
    alarmTimer = setTimeout(refreshAlarms, 200);
  }

  async function refreshAlarms() {
    let list;
    try { list = (await Gasops.gql(ALARMS)).activeAlarms; } catch (e) { console.warn("alarms", e); return; }
    Gasops.sortAlarms(list);
    net.alarms(list);
    Gasops.keyedList($("alarms"), alarmItems, list, {
      key: a => a.id,
      className: a => `prio-${a.priority} ${a.status}`,
      html: a => `<span class="what">${Gasops.escape(a.message || a.tag)}</span>
        <span class="when">${Gasops.time(a.activatedAt || a.since)}</span>
        <span class="where">${Gasops.escape(a.tag)} · ${Gasops.escape(a.areaId || "")} · ${a.status}</span>`,
    });
    $("alarm-count").textContent = String(list.length);
    stamp();
  }

  // --- leaks ----------------------------------------------------------------------------
  // The server queues a localization by itself when the leak watch raises "leak suspected"
  // (tag area/<id>/leak): read again once it has had time to finish. A burst → one pair.
  let leakTimers = [];
  function leakAlarm() {
    leakTimers.forEach(clearTimeout);
    leakTimers = LEAK_AFTER_ALARM_MS.map(ms => setTimeout(refreshLeaks, ms));
  }

  let leakReads = 0;
  async function refreshLeaks() {
    const read = ++leakReads;
    let list;
    try { list = (await Gasops.gql(LEAKS)).leakLocalizations; } catch (e) { console.warn("leak localizations", e); return; }
    if (read !== leakReads) return;  // a later read overtook this one
    // Per area the newest localization that finished in the last hours, drawn if it found a
    // leak: a later run that finds none (the leak repaired) takes the area off the map.
    const since = Date.now() - LEAK_SHOWN_MS;
    const recent = list.filter(l => l.finishedAt && new Date(l.finishedAt).getTime() >= since)
      .sort((a, b) => new Date(b.finishedAt) - new Date(a.finishedAt));
    const newest = new Map();
    for (const l of recent) if (!newest.has(l.areaId || "")) newest.set(l.areaId || "", l);
    leakShown.clear();
    for (const [area, l] of newest) if (l.detected) leakShown.set(area, l);
    const shown = [...leakShown.values()];
    net.leaks(shown);
    Gasops.keyedList($("leaks"), leakItems, shown, {
      key: l => l.areaId || "",
      className: () => "leak",
      create: area => { const li = document.createElement("li"); li.onclick = () => leakFocus(area); return li; },
      html: l => {
        const best = l.candidates[0];
        const n = l.regionNodeIds.length;
        const size = best ? `<span class="figure">~${best.leakM3h.toFixed(1)} m³/h</span>` : "size unknown";
        return `<span class="what">Leak suspected: ${l.areaId ? `area ${Gasops.escape(l.areaId)}` : "the network"},
          ${size}, search region ${n} node${n === 1 ? "" : "s"}</span>
          <span class="when">${Gasops.time(l.finishedAt)}</span>
          <span class="where">${best ? `best ${Gasops.escape(best.nodeId)} · score ${best.score.toFixed(1)} · ` : ""}window ${Math.round(l.windowMinutes)} min</span>`;
      },
    });
    $("leak-box").hidden = shown.length === 0;
  }

  function leakFocus(area) {  // a click on the panel's line: the map onto that search region
    const l = leakShown.get(area);
    if (!l) return;
    const pts = [...l.regionOutline, ...l.candidates.slice(0, 3).filter(c => c.lat != null && c.lon != null).map(c => [c.lat, c.lon])];
    if (pts.length) net.map.fitBounds(pts, { padding: [60, 60], maxZoom: 17 });
  }

  // --- twin -----------------------------------------------------------------------------
  function twin(s) {
    net.networkState(s);
    const below = s.consumersBelowMinimum.filter(c => c.supplied).length;
    const cut = s.consumersBelowMinimum.filter(c => !c.supplied).length;
    $("twin").innerHTML = `solved ${Gasops.time(s.at)} · ${Gasops.escape(s.status)} in ${s.iterations} it.
      · air ${s.airTemperatureC.toFixed(1)} °C<br>consumers below minimum: <b>${below}</b>
      · unsupplied: <b>${cut}</b>${net.affected ? ` · <span class="delta-up">${net.affected} nodes cut off</span>` : ""}`;
  }

  // --- crews ----------------------------------------------------------------------------
  async function crewList() {
    try {
      const d = await Gasops.gql(`query { crews { id name vehicle areaId } }`);
      for (const c of d.crews) crewRow(c.id, c.name, c.vehicle);
    } catch (e) { console.warn("crews", e); }
  }

  function crewRow(id, name, vehicle) {
    let c = crewItems.get(id);
    if (!c) {
      const li = document.createElement("li");
      li.dataset.crew = id;
      li.innerHTML = `<span class="name"></span><span class="ago">no position</span>`;
      li.querySelector(".name").textContent = vehicle ? `${name} · ${vehicle}` : name;
      $("crews").appendChild(li);
      c = { li, ago: li.querySelector(".ago"), ts: null };
      crewItems.set(id, c);
      $("crew-count").textContent = String(crewItems.size);
    }
    return c;
  }

  function crewPosition(p) {
    net.crew(p);
    crewRow(p.crewId, p.crewName || p.crewId, null).ts = p.ts;
    tick();
  }

  // --- map clicks -----------------------------------------------------------------------
  function popup(obj) {
    const rows = [["kind", obj.kind], ["id", obj.id], ["name", obj.name], ["area", obj.areaId],
                  ["type", obj.subtype || obj.pressureLevel]].filter(r => r[1]);
    const html = `<table>${rows.map(([k, v]) => `<tr><td class="muted">${k}</td><td>${Gasops.escape(v)}</td></tr>`).join("")}</table>
      <a href="/console#${encodeURIComponent(obj.kind)}/${encodeURIComponent(obj.id)}">open in the console</a>`;
    const at = obj.lat != null ? [obj.lat, obj.lon] : [obj.path[0], obj.path[1]];
    L.popup().setLatLng(at).setContent(html).openOn(net.map);
  }
})();
