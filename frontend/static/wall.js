// The control-room wall: the network map with live station values, the twin's pressures,
// alarms and crews, and a side panel (alarm list, gas inflow against last week, crews on
// duty). Everything arrives over subscriptions; snapshots are re-read after a reconnect.
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

  let net = null;
  const flows = new Map();        // station id → m³/h (good values only)
  let inflowStations = new Set(); // the stations whose flow is the town's inflow
  const alarmItems = new Map();   // alarm id → <li>
  const crewItems = new Map();    // crew id → { li, ts }

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
    Gasops.subscribe(`subscription { alarmEvents(minPriority: low) { alarmId } }`, {}, alarmsChanged);
    Gasops.subscribe(TWIN, {}, d => twin(d.networkStateUpdates));
    if (CREW_ROLES.includes(user.role)) {
      await crewList();
      Gasops.subscribe(CREWS, {}, d => crewPosition(d.crewPositions));
    } else {
      $("crews-box").hidden = true;
    }
    Gasops.onReconnect(() => { refreshAlarms(); lastWeek(); });
    refreshAlarms();
    lastWeek();
    setInterval(lastWeek, 10 * 60 * 1000);
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
