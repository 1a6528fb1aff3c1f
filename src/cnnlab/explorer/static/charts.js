// Plain SVG charts: grouped bars, lines and bubbles. No library: a few axes and shapes.
const NS = 'http://www.w3.org/2000/svg';
export const COLORS = ['#3b6ea5', '#d9822b', '#2f8f5b', '#b3261e', '#8a4fbf', '#7a6a1f', '#1f8a8a', '#c2477a'];

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function ticks(lo, hi, n = 5) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) out.push(+v.toPrecision(12));
  return out;
}

function logTicks(lo, hi) {
  const out = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) { const v = m * 10 ** e; if (v >= lo && v <= hi) out.push(v); }
  }
  return out;
}

function legend(series) {
  if (series.length < 2) return null;
  let x = 50;  // each entry as wide as its name
  return svg('g', { class: 'legend' }, series.map((s, i) => {
    const item = svg('g', { transform: `translate(${x},12)` },
      svg('rect', { width: 10, height: 10, y: -9, fill: s.color || COLORS[i % COLORS.length] }),
      svg('text', { x: 14, 'font-size': 11 }, s.name));
    x += 24 + 6.5 * String(s.name).length;
    return item;
  }));
}

// Grouped bars: series = [{name, values: [...]}], one group per label.
export function barChart({ labels, series, format = String, width = 420, height = 220, log = false }) {
  const m = { l: 56, r: 8, t: series.length > 1 ? 22 : 8, b: 46 };
  const w = width - m.l - m.r, hgt = height - m.t - m.b;
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  const max = Math.max(1, ...all);
  const minPos = Math.max(1, Math.min(...all.filter((v) => v > 0), max));
  const y = log ? (v) => (v > 0 ? hgt - hgt * Math.log(v / minPos * 2) / Math.log(max / minPos * 2) : hgt)
                : (v) => hgt - hgt * (v / max);
  const group = w / Math.max(1, labels.length);
  const bw = Math.max(1, (group * 0.8) / series.length);
  // scales with its box (the viewBox keeps the proportions)
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', style: 'width:100%;height:auto' });
  const g = svg('g', { transform: `translate(${m.l},${m.t})` });
  for (const t of (log ? logTicks(minPos, max) : ticks(0, max))) {
    g.append(svg('line', { x1: 0, x2: w, y1: y(t), y2: y(t), stroke: '#eceff2' }),
             svg('text', { x: -4, y: y(t) + 3, 'text-anchor': 'end', 'font-size': 10 }, format(t)));
  }
  series.forEach((s, si) => s.values.forEach((v, i) => {
    if (v === null || v === undefined) return;
    const x = i * group + group * 0.1 + si * bw;
    g.append(svg('rect', { x, y: y(v), width: bw - 1, height: Math.max(0, hgt - y(v)),
                           fill: s.color || COLORS[si % COLORS.length], 'data-value': v },
      svg('title', {}, `${s.name ? s.name + ' · ' : ''}${labels[i]}: ${format(v)}`)));
  }));
  labels.forEach((l, i) => g.append(svg('text', { x: i * group + group / 2, y: hgt + 12, 'font-size': 10,
    'text-anchor': 'end', transform: `rotate(-30 ${i * group + group / 2} ${hgt + 12})` }, l)));
  g.append(svg('line', { x1: 0, x2: w, y1: hgt, y2: hgt, stroke: '#888' }));
  root.append(g);
  const lg = legend(series); if (lg) root.append(lg);
  return root;
}

// Lines: series = [{name, points: [[x, y], ...], dash}].
export function lineChart({ series, xLabel = '', yLabel = '', width = 560, height = 280, logY = false, xInteger = false, format = (v) => String(v) }) {
  const m = { l: 56, r: 12, t: 24, b: 40 };
  const w = width - m.l - m.r, hgt = height - m.t - m.b;
  const pts = series.flatMap((s) => s.points);
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]).filter((v) => !logY || v > 0);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = logY ? Math.min(...ys) : 0, y1 = Math.max(...ys, 1e-9);
  if (logY) { y0 = 10 ** Math.floor(Math.log10(y0 || 0.1)); y1 = 10 ** Math.ceil(Math.log10(y1)); }
  const X = (v) => ((v - x0) / (x1 - x0 || 1)) * w;
  const Y = logY ? (v) => hgt - hgt * Math.log(Math.max(v, y0) / y0) / Math.log(y1 / y0)
                 : (v) => hgt - hgt * ((v - y0) / (y1 - y0 || 1));
  const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' });
  const g = svg('g', { transform: `translate(${m.l},${m.t})` });
  for (const t of (logY ? logTicks(y0, y1) : ticks(y0, y1))) {
    g.append(svg('line', { x1: 0, x2: w, y1: Y(t), y2: Y(t), stroke: '#eceff2' }),
             svg('text', { x: -4, y: Y(t) + 3, 'text-anchor': 'end', 'font-size': 10 }, format(t)));
  }
  for (const t of ticks(x0, x1, 8).filter((v) => !xInteger || Number.isInteger(v))) {
    g.append(svg('text', { x: X(t), y: hgt + 14, 'text-anchor': 'middle', 'font-size': 10 }, t));
  }
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const color = s.color || COLORS[i % COLORS.length];
    g.append(svg('path', { d: s.points.map((p, j) => `${j ? 'L' : 'M'}${X(p[0])},${Y(p[1])}`).join(''),
                           fill: 'none', stroke: color, 'stroke-width': 1.8, 'stroke-dasharray': s.dash }));
    for (const p of s.points) g.append(svg('circle', { cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: color },
      svg('title', {}, `${s.name} · ${xLabel} ${p[0]}: ${format(p[1])}`)));
  });
  g.append(svg('line', { x1: 0, x2: w, y1: hgt, y2: hgt, stroke: '#888' }),
           svg('text', { x: w / 2, y: hgt + 32, 'text-anchor': 'middle', 'font-size': 11 }, xLabel),
           svg('text', { x: -hgt / 2, y: -42, transform: 'rotate(-90)', 'text-anchor': 'middle', 'font-size': 11 }, yLabel));
  root.append(g);
  const lg = legend(series); if (lg) root.append(lg);
  return root;
}

// Bubbles on a log-x axis: points = [{label, x, y, r, color, shape, highlight}]; area ~ r^2.
export function bubbleChart({ points, xLabel, yLabel, width = 760, height = 440 }) {
  const m = { l: 56, r: 20, t: 16, b: 42 };
  const w = width - m.l - m.r, hgt = height - m.t - m.b;
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', style: `width:100%;max-width:${width * 1.4}px;height:auto` });
  if (!points.length) return root;
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const lx0 = Math.log10(Math.min(...xs)) - 0.15, lx1 = Math.log10(Math.max(...xs)) + 0.15;
  const y0 = Math.floor(Math.min(...ys) - 2), y1 = Math.ceil(Math.max(...ys) + 2);
  const X = (v) => ((Math.log10(v) - lx0) / (lx1 - lx0 || 1)) * w;
  const Y = (v) => hgt - hgt * ((v - y0) / (y1 - y0 || 1));
  const g = svg('g', { transform: `translate(${m.l},${m.t})` });
  for (const t of ticks(y0, y1)) g.append(svg('line', { x1: 0, x2: w, y1: Y(t), y2: Y(t), stroke: '#eceff2' }),
    svg('text', { x: -4, y: Y(t) + 3, 'text-anchor': 'end', 'font-size': 10 }, t));
  for (const t of logTicks(10 ** lx0, 10 ** lx1)) g.append(svg('line', { x1: X(t), x2: X(t), y1: 0, y2: hgt, stroke: '#eceff2' }),
    svg('text', { x: X(t), y: hgt + 14, 'text-anchor': 'middle', 'font-size': 10 }, t));
  for (const p of [...points].sort((a, b) => b.r - a.r)) {
    const attrs = { fill: p.color, 'fill-opacity': p.highlight ? 0.75 : 0.35, stroke: p.color, class: 'bubble', 'data-label': p.label };
    const mark = p.shape === 'diamond'
      ? svg('rect', { ...attrs, x: X(p.x) - 6, y: Y(p.y) - 6, width: 12, height: 12, transform: `rotate(45 ${X(p.x)} ${Y(p.y)})` })
      : svg('circle', { ...attrs, cx: X(p.x), cy: Y(p.y), r: p.r });
    mark.append(svg('title', {}, p.title || p.label));
    g.append(mark);
    if (p.highlight || p.shape === 'diamond') g.append(svg('text', { x: X(p.x) + Math.max(p.r, 6) + 2, y: Y(p.y) + 3, 'font-size': 11 }, p.label));
  }
  g.append(svg('line', { x1: 0, x2: w, y1: hgt, y2: hgt, stroke: '#888' }),
           svg('text', { x: w / 2, y: hgt + 32, 'text-anchor': 'middle', 'font-size': 11 }, xLabel),
           svg('text', { x: -hgt / 2, y: -40, transform: 'rotate(-90)', 'text-anchor': 'middle', 'font-size': 11 }, yLabel));
  root.append(g);
  return root;
}
