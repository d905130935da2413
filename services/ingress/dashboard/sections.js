"use strict";
// One render function per dashboard section, each from one analytics API
// answer. Values from the data are only ever set as text.
const IGWSections = (() => {
  const F = IGWFormat;
  const C = IGWCharts;
  const $ = (id) => document.getElementById(id);
  const BUCKET_MS = { minute: 60e3, hour: 3600e3, day: 86400e3 };
  const MAX_SERIES = 8;
  const NO_DATA = "No data in this time range.";

  function setValue(id, text, raw) {
    const el = $(id);
    el.textContent = text;
    if (raw === undefined) delete el.dataset.value;
    else el.dataset.value = String(raw);
  }

  // key ids are long hashes: their first characters tell them apart
  function shortId(id) { return id.length > 14 ? `${id.slice(0, 12)}…` : id; }

  // names is given when the groups are key ids: their aliases, where known
  function groupName(group, names) {
    if (group === null || group === undefined || group === "") return "(none)";
    if (!names) return String(group);
    return names.get(group) || shortId(String(group));
  }

  function table(id, head, rows) {
    const el = $(id);
    el.replaceChildren();
    if (!rows.length) return;
    const tr = el.createTHead().insertRow();
    for (const h of head) {
      const th = document.createElement("th");
      th.textContent = h;
      tr.appendChild(th);
    }
    const body = el.createTBody();
    for (const row of rows) {
      const r = body.insertRow();
      for (const cell of row) r.insertCell().textContent = cell;
    }
  }

  function totals(u) {
    const looked = (u.cache_hits || 0) + (u.cache_misses || 0);
    setValue("total-requests", F.int(u.total_requests), u.total_requests);
    setValue("total-cache", looked
      ? `${F.int(u.cache_hits)} cache hits (${F.pct(u.cache_hits / looked)})`
      : "no cache lookups");
    setValue("total-tokens", F.int(u.total_tokens), u.total_tokens);
    setValue("total-tokens-split",
      `${F.int(u.prompt_tokens)} prompt · ${F.int(u.completion_tokens)} completion`);
    setValue("total-cost", F.usd(u.total_cost), u.total_cost);
    setValue("total-cost-per", u.total_requests
      ? `${F.usd(u.total_cost / u.total_requests)} per request` : "–");
    setValue("total-errors", F.int(u.errors), u.errors);
    setValue("total-error-rate", u.total_requests
      ? `${F.pct(u.errors / u.total_requests)} of requests` : "–");
  }

  function clearTotals(text) {
    for (const id of ["total-requests", "total-tokens", "total-cost", "total-errors"]) {
      setValue(id, "–");
    }
    for (const id of ["total-cache", "total-tokens-split", "total-cost-per", "total-error-rate"]) {
      setValue(id, text || "–");
    }
  }

  // the top groups by spend (then requests) keep their own line, the rest is "other"
  function series(spend, view, names) {
    const size = BUCKET_MS[spend.bucket] || BUCKET_MS.hour;
    const first = Math.floor(view.start / size) * size;
    const xs = [];
    for (let t = first; t < view.end; t += size) xs.push(t);
    const ranked = (spend.series || []).map((s) => {
      const sum = (k) => s.points.reduce((a, p) => a + (p[k] || 0), 0);
      return { s, cost: sum("cost_usd"), requests: sum("requests") };
    }).sort((a, b) => b.cost - a.cost || b.requests - a.requests);
    const lines = [];
    ranked.forEach(({ s }, i) => {
      const own = i < MAX_SERIES || ranked.length === MAX_SERIES + 1;
      const name = own ? groupName(s.group, names) : "other";
      let line = lines.find((l) => l.name === name);
      if (!line) {
        line = {
          name, color: own ? C.color(i) : "#94a3b8",
          requests: xs.map(() => 0), tokens: xs.map(() => 0), cost: xs.map(() => 0),
          present: xs.map(() => false),
        };
        lines.push(line);
      }
      for (const p of s.points) {
        const i = Math.floor((F.parseTime(p.t) - first) / size);
        if (i < 0 || i >= xs.length) continue;
        line.requests[i] += p.requests || 0;
        line.tokens[i] += p.tokens || 0;
        line.cost[i] += p.cost_usd || 0;
        line.present[i] = true;
      }
    });
    return { xs, lines, bucket: spend.bucket };
  }

  function overTime(spend, view, names) {
    const { xs, lines, bucket } = series(spend, view, names);
    const charts = { requests: F.short, tokens: F.short, cost: F.usdAxis };
    const legend = $("series-legend");
    legend.replaceChildren();
    $("series-hint").textContent = `by ${spend.group_by}, per ${bucket}`;
    if (!lines.length) {
      for (const k of Object.keys(charts)) C.empty($(`chart-${k}`), NO_DATA);
      return;
    }
    const xLabel = (t) => F.bucketLabel(t, bucket, view.end - view.start);
    for (const [k, format] of Object.entries(charts)) {
      C.lineChart($(`chart-${k}`), {
        xs, xLabel, format,
        series: lines.map((l) => ({ name: l.name, color: l.color, values: l[k], present: l.present })),
      });
    }
    for (const l of lines) {
      const li = document.createElement("li");
      const swatch = document.createElement("i");
      swatch.style.background = l.color;
      const label = document.createElement("span");
      label.textContent = l.name;
      li.append(swatch, label);
      legend.appendChild(li);
    }
  }

  function latency(answer) {
    const rows = answer.data || [];
    const label = (r) => `${r.provider}/${r.deployment}`;
    const pair = [{ name: "p50", color: "#2563eb" }, { name: "p95", color: "#93c5fd" }];
    const ttftPair = [{ name: "p50", color: "#16a34a" }, { name: "p95", color: "#86efac" }];
    if (!rows.length) {
      C.empty($("chart-latency"), NO_DATA);
      C.empty($("chart-ttft"), NO_DATA);
      table("table-latency", [], []);
      return;
    }
    C.barChart($("chart-latency"), {
      keys: pair, format: F.ms,
      rows: rows.map((r) => ({ label: label(r), values: [r.p50_ms, r.p95_ms] })),
    });
    const timed = rows.filter((r) => r.ttft_p50_ms !== null || r.ttft_p95_ms !== null);
    if (timed.length) {
      C.barChart($("chart-ttft"), {
        keys: ttftPair, format: F.ms,
        rows: timed.map((r) => ({ label: label(r), values: [r.ttft_p50_ms, r.ttft_p95_ms] })),
      });
    } else {
      C.empty($("chart-ttft"), "No time-to-first-token data in this range.");
    }
    table("table-latency",
      ["Deployment", "Model", "Requests", "p50", "p95", "p99", "TTFT p50", "TTFT p95", "tok/s"],
      rows.map((r) => [label(r), r.model, F.int(r.requests), F.ms(r.p50_ms), F.ms(r.p95_ms),
        F.ms(r.p99_ms), F.ms(r.ttft_p50_ms), F.ms(r.ttft_p95_ms),
        r.output_tps_p50 === null ? "–" : r.output_tps_p50.toFixed(1)]));
  }

  function errors(answer, names) {
    const rows = (answer.data || []).filter((r) => r.requests > 0);
    $("errors-hint").textContent = `by ${answer.group_by}`;
    if (!rows.length) {
      C.empty($("chart-errors"), NO_DATA);
      table("table-errors", [], []);
      return;
    }
    const shown = rows.slice(0, 12);
    C.barChart($("chart-errors"), {
      keys: [{ name: "error rate", color: "#dc2626" }], format: F.pct,
      rows: shown.map((r) => ({ label: groupName(r.group, names), values: [r.error_rate] })),
    });
    const types = (by) => Object.entries(by || {}).sort((a, b) => b[1] - a[1])
      .map(([t, n]) => `${t} ×${n}`).join(", ") || "–";
    table("table-errors", [answer.group_by, "Requests", "Errors", "Rate", "Types"],
      shown.map((r) => [groupName(r.group, names), F.int(r.requests), F.int(r.errors),
        F.pct(r.error_rate), types(r.by_type)]));
  }

  function keyLabel(k) { return k.key_alias || (k.key_id ? shortId(k.key_id) : "(no key)"); }

  function keys(answer) {
    const rows = answer.data || [];
    if (!rows.length) {
      C.empty($("chart-keys"), NO_DATA);
      table("table-keys", [], []);
      return;
    }
    C.barChart($("chart-keys"), {
      keys: [{ name: "spend", color: "#9333ea" }], format: F.usd,
      rows: rows.map((k) => ({ label: keyLabel(k), values: [k.cost_usd] })),
    });
    table("table-keys",
      ["Key", "Key id", "Requests", "Tokens", "Spend", "Errors", "Last used"],
      rows.map((k) => [keyLabel(k), k.key_id ? shortId(k.key_id) : "–", F.int(k.requests), F.int(k.total_tokens),
        F.usd(k.cost_usd), F.int(k.errors), k.last_used ? F.when(F.parseTime(k.last_used)) : "–"]));
  }

  // key id -> alias, to name keys in the by-key charts
  function keyNames(answer) {
    const names = new Map();
    for (const k of (answer && answer.data) || []) {
      if (k.key_id && k.key_alias) names.set(k.key_id, k.key_alias);
    }
    return names;
  }

  function failed(ids, message) {
    for (const id of ids) C.empty($(id), message);
  }

  return { totals, clearTotals, overTime, latency, errors, keys, keyNames, failed, table };
})();
