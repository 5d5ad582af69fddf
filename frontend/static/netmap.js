// The network on a Leaflet map, shared by the wall and the console.
//
// Drawn once from `networkMap`, then only restyled: pipes by pressure level (weight) and by
// pressure (colour: the twin's modelled node pressures when it publishes), stations with their
// outlet pressure and communication state, valves and SKZ, alarm markers, crews, the area a
// twin solve finds unsupplied, and where a leak localization says to search. Every live object
// is kept in a Map keyed by its id and updated in place (or in one layer group redrawn as a
// whole), so a page left open for months does not grow.
"use strict";

const NetMap = (() => {
  const WEIGHT = { high: 5, high_1: 5, high_2: 4, medium: 3, low: 2 };
  const LEVEL_COLOUR = { high: "#7b1fa2", high_1: "#7b1fa2", high_2: "#8e44ad", medium: "#1565c0", low: "#2e7d32" };
  const NONE = "none";

  // Colour of a pressure as a share of its level's maximum, in 12 steps (few distinct colours
  // means restyling only when a pipe changes step): red where pressure is low, blue where high.
  function rampColour(share) {
    const t = Math.min(1, Math.max(0, (share - 0.35) / 0.65));
    const step = Math.round(t * 11) / 11;
    return `hsl(${Math.round(step * 215)}, 80%, ${Math.round(42 + 8 * (1 - step))}%)`;
  }

  class NetworkMap {
    constructor(element, { onPick = null, user = "anonymous" } = {}) {
      this.onPick = onPick;
      this.user = user;
      // Lines and symbols in CSS pixels would shrink on a 4K wall: scale them with the width
      // past full HD (the text scales by itself through the root font size).
      this.k = Math.min(3, Math.max(1, window.innerWidth / 1920));
      document.documentElement.style.setProperty("--map-k", String(this.k));
      this.map = L.map(element, { preferCanvas: true, zoomControl: true, attributionControl: false });
      this.pipes = new Map();        // pipe id → { line, from, to, level, colour }
      this.points = new Map();       // asset id → { marker, point, label }
      this.alarmMarkers = new Map(); // alarm id → marker
      this.crewMarkers = new Map();  // crew id → marker
      this.unsupplied = L.layerGroup().addTo(this.map);
      this.alarmLayer = L.layerGroup().addTo(this.map);
      this.crewLayer = L.layerGroup().addTo(this.map);
      // Leak localizations: SVG (not the canvas) in a pane of their own, above the pipes and
      // below the markers, so that their shapes carry CSS classes (.leak-region, .leak-candidate).
      this.map.createPane("leaks").style.zIndex = 450;
      this.leakRenderer = L.svg({ pane: "leaks" });
      this.leakLayer = L.layerGroup().addTo(this.map);
      this.leakKey = null;
      this.levels = {};
      this.tiles = null;
      this.tileSources = [];
      this._legend();
    }

    // What the colours mean, in the map's corner.
    _legend() {
      const legend = L.control({ position: "bottomleft" });
      legend.onAdd = () => {
        const div = L.DomUtil.create("div", "map-legend");
        const steps = [0.35, 0.5, 0.65, 0.8, 1].map(x => `<i style="background:${rampColour(x)}"></i>`).join("");
        div.innerHTML = `<div>pressure, share of the level's maximum</div>
          <div class="ramp">${steps}</div><div class="ends"><span>≤ 35 %</span><span>100 %</span></div>
          <div><i style="background:#ad1457"></i> cut off (twin) · line width: pressure level</div>`;
        return div;
      };
      legend.addTo(this.map);
    }

    // Read the network and draw it; returns the map data (pipes, points, bounds, tile sources).
    async load(area = null) {
      const data = await Gasops.gql(`query($a: String) {
        pressureLevels { code maxPaGauge }
        networkMap(area: $a) { bounds tileSources { name urlTemplate }
          pipes { id name areaId pressureLevel fromNodeId toNodeId path }
          points { kind id name areaId lat lon subtype remotelyOperable } } }`, { a: area });
      for (const l of data.pressureLevels) this.levels[l.code] = l.maxPaGauge;
      const m = data.networkMap;
      for (const p of m.pipes) {
        const latlngs = [];
        for (let i = 0; i < p.path.length; i += 2) latlngs.push([p.path[i], p.path[i + 1]]);
        const colour = LEVEL_COLOUR[p.pressureLevel] || "#555";
        const line = L.polyline(latlngs, { color: colour, weight: (WEIGHT[p.pressureLevel] || 2) * this.k, opacity: 0.9 });
        line.on("click", () => this.onPick && this.onPick({ kind: "pipe", ...p }));
        line.addTo(this.map);
        this.pipes.set(p.id, { line, from: p.fromNodeId, to: p.toNodeId, level: p.pressureLevel, colour });
      }
      for (const q of m.points) this._addPoint(q);
      if (m.bounds) this.map.fitBounds([[m.bounds[0], m.bounds[1]], [m.bounds[2], m.bounds[3]]], { padding: [20, 20] });
      else this.map.setView([55.75, 37.62], 12);
      this.tileSources = m.tileSources;
      this.useBackground(localStorage.getItem(this._tileKey()) || NONE);
      return m;
    }

    _addPoint(q) {
      let marker;
      if (q.kind === "station") {
        marker = L.circleMarker([q.lat, q.lon], { radius: (q.subtype === "GRS" ? 11 : 8) * this.k, color: "#102a43", weight: 2 * this.k, fillColor: "#9aa5b1", fillOpacity: 1 });
        marker.bindTooltip(`${Gasops.escape(q.name || q.id)}<br><b class="pout">—</b>`, { permanent: true, direction: "right", className: "station-label", offset: [8, 0] });
      } else if (q.kind === "valve") {
        const closed = q.subtype === "closed";
        marker = L.circleMarker([q.lat, q.lon], { radius: 4 * this.k, color: closed ? "#c62828" : "#37474f", weight: 2 * this.k, fillColor: closed ? "#c62828" : "#fff", fillOpacity: 1 });
      } else {
        marker = L.circleMarker([q.lat, q.lon], { radius: 4 * this.k, color: "#ef6c00", weight: 2 * this.k, fillColor: "#ffe0b2", fillOpacity: 1 });
      }
      marker.on("click", () => this.onPick && this.onPick(q));
      marker.addTo(this.map);
      this.points.set(q.id, { marker, point: q, text: null });
    }

    _tileKey() { return `gasops.tiles.${this.user}`; }

    // Background: "none" (schematic) or the name of a configured tile source; kept per user.
    useBackground(name) {
      if (this.tiles) { this.map.removeLayer(this.tiles); this.tiles = null; }
      const src = this.tileSources.find(s => s.name === name);
      if (src) this.tiles = L.tileLayer(src.urlTemplate, { maxZoom: 20 }).addTo(this.map);
      this.map.getContainer().classList.toggle("schematic", !src);
      localStorage.setItem(this._tileKey(), src ? name : NONE);
      return src ? name : NONE;
    }

    // A station's live status: outlet pressure label and communication colour.
    stationStatus(s) {
      const entry = this.points.get(s.stationId);
      if (!entry) return;
      const p = s.pOut && s.pOut.good ? Number(s.pOut.value) : null;
      const text = `${Gasops.escape(entry.point.name || entry.point.id)}<br><b class="pout">${Gasops.pressure(p)}</b>`;
      if (text !== entry.text) { entry.marker.setTooltipContent(text); entry.text = text; }
      const fill = !s.communicating ? "#9aa5b1" : s.door && s.door.good && Number(s.door.value) ? "#f9a825" : "#2e7d32";
      if (entry.fill !== fill) { entry.marker.setStyle({ fillColor: fill }); entry.fill = fill; }
      const tip = entry.marker.getTooltip().getElement();
      if (tip) tip.classList.toggle("offline", !s.communicating);
    }

    // The twin's solve: colour every pipe by its mean node pressure; mark unsupplied nodes.
    networkState(state) {
      const pressure = new Map();
      const dead = [];
      for (const n of state.nodes) {
        pressure.set(n.id, n.pressurePaGauge);
        if (!n.supplied) dead.push(n.id);
      }
      const deadSet = new Set(dead);
      for (const [, p] of this.pipes) {
        const a = pressure.get(p.from), b = pressure.get(p.to);
        let colour;
        if (deadSet.has(p.from) && deadSet.has(p.to)) colour = "#ad1457";
        else if (a == null || b == null) colour = LEVEL_COLOUR[p.level] || "#555";
        else colour = rampColour((a + b) / 2 / (this.levels[p.level] || 5000));
        if (colour !== p.colour) {
          p.line.setStyle({ color: colour, dashArray: colour === "#ad1457" ? "6 6" : null });
          p.colour = colour;
        }
      }
      this.affected = dead.length;
      // The unsupplied area, redrawn as one layer (a solve either has an incident or not).
      this.unsupplied.clearLayers();
      if (dead.length) {
        const ends = new Map();
        for (const [, p] of this.pipes) {
          if (deadSet.has(p.from)) ends.set(p.from, p.line.getLatLngs()[0]);
          if (deadSet.has(p.to)) ends.set(p.to, p.line.getLatLngs().at(-1));
        }
        for (const [, ll] of ends) L.circleMarker(ll, { radius: 6 * this.k, stroke: false, fillColor: "#ad1457", fillOpacity: 0.35, interactive: false }).addTo(this.unsupplied);
      }
    }

    // Active alarms: a marker per alarm at its asset, blinking while unacknowledged.
    alarms(list) {
      const seen = new Set();
      for (const a of list) {
        const where = this.points.get(a.assetId);
        if (!where) continue;
        seen.add(a.id);
        const cls = `alarm-icon prio-${a.priority} ${a.status === "unack" || a.status === "rtn_unack" ? "blink" : ""} ${a.active ? "" : "cleared"}`;
        let m = this.alarmMarkers.get(a.id);
        if (!m) {
          m = L.marker(where.marker.getLatLng(), { icon: L.divIcon({ className: cls, iconSize: [26 * this.k, 26 * this.k] }), keyboard: false });
          m.on("click", () => this.onPick && this.onPick(where.point));
          m.addTo(this.alarmLayer);
          m.cls = cls;
          this.alarmMarkers.set(a.id, m);
        } else if (m.cls !== cls) {
          m.setIcon(L.divIcon({ className: cls, iconSize: [26 * this.k, 26 * this.k] }));
          m.cls = cls;
        }
      }
      for (const [id, m] of this.alarmMarkers) {
        if (!seen.has(id)) { this.alarmLayer.removeLayer(m); this.alarmMarkers.delete(id); }
      }
    }

    // The leak localizations to show (at most one per area): the search region — its outline
    // as a translucent polygon, a circle of 60 m round a single spot, a thick line for two — and
    // the three best candidate nodes, the best labelled with its leak. Drawn again only when the
    // list changes, always into the one layer group: nothing piles up on a wall left open.
    leaks(list) {
      const key = list.map(l => `${l.id}@${l.finishedAt}`).join();
      if (key === this.leakKey) return;
      this.leakKey = key;
      this.leakLayer.clearLayers();
      const k = this.k, renderer = this.leakRenderer;
      for (const l of list) {
        const pts = (l.regionOutline || []).filter(p => p.length === 2 && p.every(Number.isFinite));
        const region = { renderer, className: "leak-region", interactive: false, color: "#ff1744",
                         weight: 2 * k, fillColor: "#ff1744", fillOpacity: 0.2 };
        if (pts.length === 1) L.circle(pts[0], { ...region, radius: 60 }).addTo(this.leakLayer);
        else if (pts.length === 2) L.polyline(pts, { ...region, weight: 18 * k, opacity: 0.4, lineCap: "round" }).addTo(this.leakLayer);
        else if (pts.length > 2) L.polygon(pts, region).addTo(this.leakLayer);  // not dashed: that is "cut off"
        l.candidates.slice(0, 3).forEach((c, i) => {
          if (c.lat == null || c.lon == null) return;
          const m = L.circleMarker([c.lat, c.lon], { renderer, className: i ? "leak-candidate" : "leak-candidate best",
            radius: (i ? 5 : 7) * k, color: "#fff", weight: 2 * k, fillColor: i ? "#ff8a80" : "#d50000", fillOpacity: 1 });
          const rows = [["candidate", `#${i + 1} of the localization`], ["node", c.nodeId], ["area", c.areaId || l.areaId || "network"],
                        ["leak", `~${c.leakM3h.toFixed(1)} m³/h (${c.leakKgS.toFixed(4)} kg/s)`], ["score", `${c.score.toFixed(1)} (χ² gain)`],
                        ["window", `${Math.round(l.windowMinutes)} min`], ["found", Gasops.time(l.finishedAt)]];
          m.bindPopup(`<table>${rows.map(([a, b]) => `<tr><td class="muted">${a}</td><td>${Gasops.escape(b)}</td></tr>`).join("")}</table>`);
          if (!i) m.bindTooltip(`~${c.leakM3h.toFixed(1)} m³/h`, { permanent: true, direction: "top", className: "leak-label", offset: [0, -8 * k] });
          m.addTo(this.leakLayer);
        });
      }
    }

    // A crew's position (moves its marker; one marker per crew, ever).
    crew(pos) {
      let m = this.crewMarkers.get(pos.crewId);
      const ll = [pos.lat, pos.lon];
      if (!m) {
        m = L.marker(ll, { icon: L.divIcon({ className: "crew-icon", html: `<span>${Gasops.escape(pos.crewName || pos.crewId)}</span>`, iconSize: null }) });
        m.addTo(this.crewLayer);
        this.crewMarkers.set(pos.crewId, m);
      } else {
        m.setLatLng(ll);
      }
      m.ts = pos.ts;
    }
  }

  return { NetworkMap, NONE };
})();
