"use strict";
// Number, money, duration and time formatting for the dashboard, and parsing
// of the API's timestamps (ISO 8601; a time without a zone is UTC).
const IGWFormat = (() => {
  const ints = new Intl.NumberFormat("en-US");
  const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
  const pad = (n) => String(n).padStart(2, "0");

  function int(n) { return ints.format(Math.round(n || 0)); }
  function short(n) { return compact.format(n || 0); }

  function usd(v) {
    const a = Math.abs(v || 0);
    if (a === 0) return "$0.00";
    if (a >= 100) return `$${ints.format(Math.round(v))}`;
    if (a >= 1) return `$${v.toFixed(2)}`;
    if (a >= 0.01) return `$${v.toFixed(4)}`;
    return `$${v.toFixed(6)}`;
  }

  function usdAxis(v) {
    if (v === 0) return "$0";
    return v >= 1 ? `$${compact.format(v)}` : `$${Number(v.toPrecision(2))}`;
  }

  function ms(v) {
    if (v === null || v === undefined) return "–";
    return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`;
  }

  function pct(r) { return `${((r || 0) * 100).toFixed(1)}%`; }

  function parseTime(value) {
    if (typeof value === "number") return value * 1000;
    const bare = /^\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(value);
    return Date.parse(bare ? `${value.replace(" ", "T")}Z` : value);
  }

  // a bucket start in local time, as short as the bucket size allows
  function bucketLabel(t, bucket, spanMs) {
    const d = new Date(t);
    const day = `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    if (bucket === "day") return day;
    return spanMs > 86400e3 ? `${day} ${clock}` : clock;
  }

  function when(t) {
    const d = new Date(t);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  // the value of an <input type="datetime-local"> for a moment, in local time
  function localInput(t) {
    const d = new Date(t);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  return { int, short, usd, usdAxis, ms, pct, parseTime, bucketLabel, when, localInput };
})();
