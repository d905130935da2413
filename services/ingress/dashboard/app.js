"use strict";
// The dashboard's controller: the time range, the group-by, the API key (kept
// in localStorage, sent as a bearer token), and one load of every section.
// document.body.dataset.state is "loading", then "ready", "empty" or "denied".
(() => {
  const F = IGWFormat;
  const S = IGWSections;
  const $ = (id) => document.getElementById(id);
  const KEY = "igw.dashboard.key";
  const RANGES = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
  const SECTIONS = {
    spend: ["chart-requests", "chart-tokens", "chart-cost"],
    latency: ["chart-latency", "chart-ttft"],
    errors: ["chart-errors"],
    keys: ["chart-keys"],
  };
  const state = { range: "24h", from: null, to: null, groupBy: "model" };
  let generation = 0;
  let last = null;

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function storedKey() {
    try { return localStorage.getItem(KEY) || ""; } catch { return $("api-key").value.trim(); }
  }

  async function getJSON(path, params) {
    const url = new URL(path, window.location.origin);
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, String(v));
    const headers = { accept: "application/json" };
    const key = storedKey();
    if (key) headers.authorization = `Bearer ${key}`;
    let resp;
    try {
      resp = await fetch(url, { headers, cache: "no-store" });
    } catch {
      throw new ApiError(0, "the gateway did not answer");
    }
    if (!resp.ok) {
      let message = resp.statusText;
      try { message = (await resp.json()).error.message || message; } catch { /* not JSON */ }
      throw new ApiError(resp.status, message);
    }
    return resp.json();
  }

  function view() {
    if (state.range === "custom") return { start: state.from, end: state.to };
    const end = Date.now();
    return { start: end - RANGES[state.range], end };
  }

  function bucketFor(spanMs) {
    if (spanMs <= 6 * 3600e3) return "minute";
    return spanMs <= 8 * 86400e3 ? "hour" : "day";
  }

  function notice(text, kind) {
    const el = $("notice");
    el.hidden = !text;
    el.textContent = text || "";
    el.className = `notice${kind === "error" ? " error" : ""}`;
  }

  function denial(err) {
    const why = err.message ? `: ${err.message}` : "";
    if (err.status === 403) {
      return `This key may not read analytics (403${why}). Use a viewer or admin key.`;
    }
    return storedKey()
      ? `The gateway refused this key (401${why}). Enter a viewer or admin key above and press Save.`
      : `This gateway needs an API key (401${why}). Enter a viewer or admin key above and press Save.`;
  }

  function reason(err) {
    return err.status ? `Could not load (${err.status}): ${err.message}` : `Could not load: ${err.message}`;
  }

  function showControls(v) {
    for (const b of document.querySelectorAll("[data-range]")) {
      b.classList.toggle("active", b.dataset.range === state.range);
    }
    $("range-from").value = F.localInput(v.start);
    $("range-to").value = F.localInput(v.end);
    $("group-by").value = state.groupBy;
    const hash = state.range === "custom"
      ? `from=${v.start}&to=${v.end}&group=${state.groupBy}`
      : `range=${state.range}&group=${state.groupBy}`;
    history.replaceState(null, "", `#${hash}`);
  }

  function render(r, v) {
    const names = r.keys.ok ? S.keyNames(r.keys.value) : new Map();
    const groupNames = state.groupBy === "key" ? names : null;
    if (r.usage.ok) S.totals(r.usage.value);
    else S.clearTotals(reason(r.usage.error));
    if (r.spend.ok) S.overTime(r.spend.value, v, groupNames);
    else S.failed(SECTIONS.spend, reason(r.spend.error));
    if (r.latency.ok) S.latency(r.latency.value);
    else S.failed(SECTIONS.latency, reason(r.latency.error));
    if (r.errors.ok) S.errors(r.errors.value, groupNames);
    else S.failed(SECTIONS.errors, reason(r.errors.error));
    if (r.keys.ok) S.keys(r.keys.value);
    else S.failed(SECTIONS.keys, reason(r.keys.error));
  }

  async function load() {
    const mine = ++generation;
    const v = view();
    const bucket = bucketFor(v.end - v.start);
    const range = { start: new Date(v.start).toISOString(), end: new Date(v.end).toISOString() };
    showControls(v);
    document.body.dataset.state = "loading";
    document.body.dataset.start = range.start;
    document.body.dataset.end = range.end;
    $("status").textContent = "Loading…";
    const calls = {
      usage: getJSON("/api/v1/usage", range),
      spend: getJSON("/analytics/spend", { ...range, group_by: state.groupBy, bucket }),
      latency: getJSON("/analytics/latency", range),
      errors: getJSON("/analytics/errors", { ...range, group_by: state.groupBy }),
      keys: getJSON("/analytics/usage-by-key", { ...range, limit: 10 }),
    };
    const settled = await Promise.allSettled(Object.values(calls));
    if (mine !== generation) return; // a newer load replaced this one
    const r = {};
    Object.keys(calls).forEach((name, i) => {
      const s = settled[i];
      r[name] = s.status === "fulfilled" ? { ok: true, value: s.value } : { ok: false, error: s.reason };
    });
    const denied = Object.values(r).find((x) => !x.ok && [401, 403].includes(x.error.status));
    const span = `${F.when(v.start)} – ${F.when(v.end)}`;
    if (denied) {
      last = null;
      notice(denial(denied.error), "error");
      S.clearTotals();
      for (const ids of Object.values(SECTIONS)) S.failed(ids, "Needs a viewer or admin key.");
      for (const t of ["table-latency", "table-errors", "table-keys"]) S.table(t, [], []);
      $("series-legend").replaceChildren();
      $("status").textContent = span;
      document.body.dataset.state = "denied";
      return;
    }
    last = { r, v };
    render(r, v);
    const empty = r.usage.ok && !r.usage.value.total_requests;
    notice(empty
      ? `No requests between ${span}. Pick a longer range, or send some traffic through the gateway.`
      : "");
    $("status").textContent = `${span} · per ${bucket} · updated ${new Date().toLocaleTimeString("en-GB")}`;
    document.body.dataset.state = empty ? "empty" : "ready";
  }

  function fromHash() {
    const p = new URLSearchParams(window.location.hash.slice(1));
    const group = p.get("group");
    if (group && [...$("group-by").options].some((o) => o.value === group)) state.groupBy = group;
    if (p.get("range") in RANGES) state.range = p.get("range");
    const from = Number(p.get("from"));
    const to = Number(p.get("to"));
    if (from && to && from < to) Object.assign(state, { range: "custom", from, to });
  }

  function wire() {
    for (const b of document.querySelectorAll("[data-range]")) {
      b.addEventListener("click", () => { state.range = b.dataset.range; load(); });
    }
    $("custom-range").addEventListener("submit", (e) => {
      e.preventDefault();
      const from = new Date($("range-from").value).getTime();
      const to = new Date($("range-to").value).getTime();
      if (!(from < to)) {
        notice("The custom range needs a start before its end.", "error");
        return;
      }
      Object.assign(state, { range: "custom", from, to });
      load();
    });
    $("group-by").addEventListener("change", (e) => { state.groupBy = e.target.value; load(); });
    $("refresh").addEventListener("click", () => load());
    $("api-key").value = storedKey();
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const key = $("api-key").value.trim();
      try {
        if (key) localStorage.setItem(KEY, key);
        else localStorage.removeItem(KEY);
      } catch { /* storage disabled: the key lasts for this page only */ }
      load();
    });
    $("key-clear").addEventListener("click", () => {
      try { localStorage.removeItem(KEY); } catch { /* storage disabled */ }
      $("api-key").value = "";
      load();
    });
    let pending = 0;
    window.addEventListener("resize", () => {
      clearTimeout(pending);
      pending = setTimeout(() => { if (last) render(last.r, last.v); }, 150);
    });
  }

  fromHash();
  wire();
  load();
})();
