// The crew's phone: sign in, share the position from the browser's geolocation, see tasks.
// Positions go out at most every MIN_INTERVAL_MS (a moving van reports often enough for the
// wall, a phone's battery lasts the shift, and the audit trail gets ~8,600 rows a day, not 17k); the server keeps the day's track.
"use strict";

(() => {
  const $ = id => document.getElementById(id);
  const MIN_INTERVAL_MS = 10000;
  const REPORT = `mutation($lat: Float!, $lon: Float!, $acc: Float!, $ts: DateTime!) {
    reportPosition(lat: $lat, lon: $lon, accuracy: $acc, ts: $ts) {
      __typename ... on CrewPosition { crewId ts } ... on PositionRefused { message }
      ... on ValidationError { message } ... on Forbidden { message } } }`;
  let watch = null, lastSent = 0, sent = 0, latest = null, timer = null;

  Gasops.requireLogin($("login"), ready, { title: "gasops — crew", roles: ["crew", "foreman"] });

  function ready(user) {
    $("login").hidden = true;
    $("app").hidden = false;
    $("who").textContent = `Signed in as ${user.username} (${user.role}).`;
    $("signout").onclick = () => { stop(); Gasops.signOut(); };
    $("share").onclick = () => (watch === null ? start() : stop());
  }

  function start() {
    if (!("geolocation" in navigator)) { $("error").textContent = "this browser has no geolocation"; return; }
    $("error").textContent = "";
    watch = navigator.geolocation.watchPosition(position, failed,
      { enableHighAccuracy: true, maximumAge: 5000, timeout: 30000 });
    $("share").textContent = "Stop sharing";
    $("where").textContent = "waiting for a fix…";
  }

  function stop() {
    if (watch !== null) navigator.geolocation.clearWatch(watch);
    watch = null;
    clearTimeout(timer);
    $("share").textContent = "Share my position";
    $("where").textContent = "not shared";
  }

  function failed(err) {
    $("error").textContent = err.code === 1 ? "location permission refused: allow it in the browser's settings"
      : `no position yet (${err.message})`;
  }

  function position(p) {
    latest = p;
    $("where").textContent = `${p.coords.latitude.toFixed(5)}, ${p.coords.longitude.toFixed(5)}`;
    $("accuracy").textContent = `${Math.round(p.coords.accuracy)} m`;
    const wait = lastSent + MIN_INTERVAL_MS - Date.now();
    clearTimeout(timer);
    if (wait <= 0) send(); else timer = setTimeout(send, wait);
  }

  async function send() {
    if (!latest || watch === null) return;
    const c = latest.coords;
    lastSent = Date.now();
    try {
      const r = (await Gasops.gql(REPORT, { lat: c.latitude, lon: c.longitude, acc: c.accuracy,
        ts: new Date(latest.timestamp).toISOString() })).reportPosition;
      if (r.__typename !== "CrewPosition") { $("error").textContent = r.message || r.__typename; return; }
      sent += 1;
      $("count").textContent = String(sent);
      $("sent").textContent = Gasops.time(new Date());
      $("error").textContent = "";
    } catch (e) { $("error").textContent = `not sent (${e.message}); retrying with the next fix`; }
  }
})();
