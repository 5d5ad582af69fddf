// Shared by the wall, the console and the crew page: sign-in, GraphQL over HTTP, live
// subscriptions over graphql-transport-ws (graphql-ws from npm, served from /vendor), and the
// stale indicator. No framework and no build step: each page is a few hundred lines that a
// control-room engineer can read and change.
"use strict";

const Gasops = (() => {
  const KEY = "gasops.session";  // sessionStorage: a shared workstation forgets on tab close
  const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;

  function session() {
    try { return JSON.parse(sessionStorage.getItem(KEY)); } catch { return null; }
  }
  function saveSession(s) { sessionStorage.setItem(KEY, JSON.stringify(s)); }
  function signOut() { sessionStorage.removeItem(KEY); location.reload(); }

  class GraphQLError extends Error {}

  // One GraphQL operation over HTTP; the `data` object, or a GraphQLError with the messages.
  async function gql(query, variables = {}) {
    const s = session();
    const headers = { "content-type": "application/json" };
    if (s) headers.authorization = `Bearer ${s.token}`;
    const r = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
    const body = await r.json();
    if (body.errors && body.errors.length) {
      const codes = body.errors.map(e => e.extensions && e.extensions.code);
      if (codes.includes("FORBIDDEN") && !s) signOut();
      throw new GraphQLError(body.errors.map(e => e.message).join("; "));
    }
    return body.data;
  }

  const LOGIN = `mutation($u: String!, $p: String!) { login(username: $u, password: $p) {
    __typename ... on LoginSuccess { accessToken expiresAt user { username role areaIds allAreas } }
    ... on AuthError { message } } }`;
  const RENEW = `mutation { renewToken { __typename
    ... on LoginSuccess { accessToken expiresAt user { username role areaIds allAreas } }
    ... on AuthError { message } } }`;

  function keep(result) {
    saveSession({ token: result.accessToken, expiresAt: result.expiresAt, user: result.user });
  }

  // Renew the access token at half its remaining life, for as long as the page is open.
  let renewTimer = null;
  function scheduleRenewal() {
    clearTimeout(renewTimer);
    const s = session();
    if (!s) return;
    const left = new Date(s.expiresAt).getTime() - Date.now();
    renewTimer = setTimeout(async () => {
      try {
        const r = (await gql(RENEW)).renewToken;
        if (r.__typename === "LoginSuccess") keep(r); else return signOut();
      } catch (e) { /* server away: try again soon, the token may still be valid */ }
      scheduleRenewal();
    }, Math.max(5000, left / 2));
  }

  // Show a sign-in form in `root` until a login succeeds; then call `ready(user)`.
  function requireLogin(root, ready, { title = "gasops", roles = null } = {}) {
    const s = session();
    if (s && new Date(s.expiresAt).getTime() > Date.now() + 5000) {
      scheduleRenewal();
      return ready(s.user);
    }
    root.innerHTML = `<form class="login" autocomplete="on">
        <h1>${escape(title)}</h1>
        <label>User <input name="u" autocomplete="username" required autofocus></label>
        <label>Password <input name="p" type="password" autocomplete="current-password" required></label>
        <button type="submit">Sign in</button><p class="error" role="alert"></p></form>`;
    const form = root.querySelector("form");
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const err = form.querySelector(".error");
      err.textContent = "";
      try {
        const r = (await gql(LOGIN, { u: form.u.value, p: form.p.value })).login;
        if (r.__typename !== "LoginSuccess") { err.textContent = r.message; return; }
        if (roles && !roles.includes(r.user.role)) {
          err.textContent = `this page is for ${roles.join(", ")}; you are ${r.user.role}`;
          return;
        }
        keep(r);
        root.innerHTML = "";
        scheduleRenewal();
        ready(r.user);
      } catch (e) { err.textContent = `server unreachable: ${e.message}`; }
    });
  }

  // The live connection: one WebSocket for every subscription of the page. It reconnects by
  // itself, forever, with back-off; while it is down, `#stale` is shown and the page's
  // `onReconnect` hooks re-read their snapshots once it is back.
  let client = null;
  const reconnectHooks = [];
  let everConnected = false;
  function staleBanner(on) {
    const el = document.getElementById("stale");
    if (el) el.hidden = !on;
    document.body.classList.toggle("stale", on);
  }
  function live() {
    if (client) return client;
    client = graphqlWs.createClient({
      url: wsUrl,
      lazy: false,
      retryAttempts: Infinity,
      shouldRetry: () => true,
      retryWait: async n => new Promise(r => setTimeout(r, Math.min(10000, 500 * 2 ** n) * (0.5 + Math.random() / 2))),
      keepAlive: 10000,
      connectionParams: () => {
        const s = session();
        return s ? { Authorization: `Bearer ${s.token}` } : {};
      },
      on: {
        connected: () => {
          staleBanner(false);
          if (everConnected) reconnectHooks.forEach(f => { try { f(); } catch (e) { console.warn(e); } });
          everConnected = true;
        },
        closed: () => staleBanner(true),
        error: () => staleBanner(true),
      },
    });
    return client;
  }
  function onReconnect(f) { reconnectHooks.push(f); }

  // Subscribe; `next(data)` per result. Returns the unsubscribe function.
  function subscribe(query, variables, next) {
    return live().subscribe({ query, variables }, {
      next: r => { if (r.data) next(r.data); else if (r.errors) console.warn("subscription:", r.errors); },
      error: e => console.warn("subscription error", e),
      complete: () => {},
    });
  }

  // Active alarms in the order a control room reads them: priority, then the newest first.
  const RANK = { critical: 0, high: 1, medium: 2, low: 3 };
  function sortAlarms(list) {
    return list.sort((a, b) => RANK[a.priority] - RANK[b.priority]
      || String(b.activatedAt || b.since).localeCompare(String(a.activatedAt || a.since)));
  }

  // Show `list` in `parent` with one element per key, reused between calls: rows whose html
  // did not change are not touched, gone ones are removed — the DOM stays as big as the list.
  function keyedList(parent, elements, list, { key, html, className, create = () => document.createElement("li") }) {
    const keep = new Set(list.map(key));
    for (const [k, el] of elements) if (!keep.has(k)) { el.remove(); elements.delete(k); }
    list.forEach((item, i) => {
      const k = key(item);
      let el = elements.get(k);
      if (!el) { el = create(k); elements.set(k, el); }
      const h = html(item);
      if (el.dataset.html !== h) { el.innerHTML = h; el.dataset.html = h; }
      el.className = className(item);
      if (parent.children[i] !== el) parent.insertBefore(el, parent.children[i] || null);
    });
  }

  function escape(s) {
    return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  // Pa gauge → "2.95 bar" / "3.1 kPa" as operators of each level read them.
  function pressure(pa) {
    if (pa == null || Number.isNaN(pa)) return "—";
    return Math.abs(pa) >= 100000 ? `${(pa / 1e5).toFixed(2)} bar` : `${(pa / 1000).toFixed(2)} kPa`;
  }
  function time(ts) { return ts ? new Date(ts).toLocaleTimeString([], { hour12: false }) : "—"; }

  return { gql, session, sortAlarms, keyedList, signOut, requireLogin, live, subscribe, onReconnect, escape, pressure, time, GraphQLError };
})();
