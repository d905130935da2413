"use strict";
// A small SVG chart renderer: line charts over time buckets and horizontal
// grouped bar charts. Every text node is set with textContent, never markup,
// so labels taken from the data (model names, key aliases) cannot inject HTML.
const IGWCharts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2",
    "#ca8a04", "#db2777", "#64748b"];

  function color(i) { return PALETTE[i % PALETTE.length]; }

  function node(name, attrs, parent, text) {
    const el = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    if (parent) parent.appendChild(el);
    return el;
  }

  function svg(container, width, height) {
    container.replaceChildren();
    return node("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img" },
      container);
  }

  function empty(container, message) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = message;
    container.replaceChildren(p);
  }

  // 0 and a few round steps covering max: [0, 5, 10, 15, 20]
  function ticks(max, count) {
    const top = max > 0 ? max : 1;
    const raw = top / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / mag;
    const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
    const n = Math.max(1, Math.ceil(top / step - 1e-9));
    return Array.from({ length: n + 1 }, (_, i) => i * step);
  }

  // series: [{name, color, values: number[], present: boolean[]}], one value per x
  function lineChart(container, { xs, series, format, xLabel }) {
    const W = Math.max(container.clientWidth || 360, 240);
    const H = 190;
    const m = { l: 52, r: 12, t: 10, b: 24 };
    const pw = W - m.l - m.r;
    const ph = H - m.t - m.b;
    const root = svg(container, W, H);
    const max = Math.max(0, ...series.flatMap((s) => s.values));
    const ys = ticks(max, 4);
    const top = ys[ys.length - 1];
    const x = (i) => m.l + (xs.length <= 1 ? pw / 2 : (i * pw) / (xs.length - 1));
    const y = (v) => m.t + ph - (v / top) * ph;

    const axis = node("g", { class: "axis" }, root);
    for (const v of ys) {
      node("line", { class: "grid", x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }, axis);
      node("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, axis, format(v));
    }
    const every = Math.max(1, Math.ceil(xs.length / Math.max(2, Math.floor(pw / 80))));
    for (let i = 0; i < xs.length; i += every) {
      const anchor = i === 0 ? "start" : "middle";
      node("text", { x: x(i), y: H - 6, "text-anchor": anchor }, axis, xLabel(xs[i]));
    }

    series.forEach((s) => {
      const g = node("g", { class: "series", "data-series": s.name }, root);
      const d = s.values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`);
      node("path", {
        class: "line", d: d.join(""), fill: "none", stroke: s.color, "stroke-width": 2,
        "stroke-linejoin": "round",
      }, g);
      s.values.forEach((v, i) => {
        if (!s.present[i]) return;
        const dot = node("circle", {
          class: "point", cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 3, fill: s.color,
        }, g);
        node("title", {}, dot, `${s.name} · ${xLabel(xs[i])}: ${format(v)}`);
      });
    });
    return root;
  }

  // rows: [{label, values: (number|null)[]}], keys: [{name, color}], one value per key
  function barChart(container, { rows, keys, format }) {
    const W = Math.max(container.clientWidth || 360, 240);
    const barH = 12;
    const gap = 10;
    const rowH = keys.length * barH + (keys.length - 1) * 2 + gap;
    const labelW = Math.min(200, Math.round(W * 0.34));
    const valueW = 64;
    const legendH = keys.length > 1 ? 20 : 0;
    const H = legendH + rows.length * rowH + 4;
    const root = svg(container, W, H);
    const pw = W - labelW - valueW - 8;
    const max = Math.max(0, ...rows.flatMap((r) => r.values.filter((v) => v !== null)));
    const scale = (v) => (max > 0 ? (v / max) * pw : 0);

    if (legendH) {
      let lx = labelW + 8;
      for (const k of keys) {
        node("rect", { x: lx, y: 2, width: 10, height: 10, rx: 2, fill: k.color }, root);
        const t = node("text", { class: "label", x: lx + 14, y: 11 }, root, k.name);
        lx += 24 + (t.getComputedTextLength ? t.getComputedTextLength() : 40);
      }
    }
    rows.forEach((row, r) => {
      const y0 = legendH + r * rowH;
      const mid = y0 + (rowH - gap) / 2;
      const label = node("text", {
        class: "label", x: labelW, y: mid + 4, "text-anchor": "end",
      }, root, clip(row.label, Math.floor(labelW / 6.5)));
      node("title", {}, label, row.label);
      keys.forEach((k, i) => {
        const v = row.values[i];
        const by = y0 + i * (barH + 2);
        if (v === null || v === undefined) {
          node("text", { class: "value", x: labelW + 8, y: by + barH - 2 }, root, "–");
          return;
        }
        const bar = node("rect", {
          class: "bar", x: labelW + 8, y: by, height: barH, rx: 2,
          width: Math.max(1, scale(v)).toFixed(1), fill: k.color,
        }, root);
        node("title", {}, bar, `${row.label} · ${k.name}: ${format(v)}`);
        node("text", { class: "value", x: labelW + 12 + scale(v), y: by + barH - 2 }, root,
          format(v));
      });
    });
    return root;
  }

  function clip(text, n) {
    return text.length > n ? `${text.slice(0, Math.max(1, n - 1))}…` : text;
  }

  return { color, empty, lineChart, barChart, ticks };
})();
