// The block diagram: the analyser's data-flow rows (each row names the rows it reads),
// shown with every module collapsed into one box unless it is expanded. Branches appear
// where a row reads several others: residual adds, concatenations (Inception, DenseNet)
// and gate multiplies (squeeze-and-excitation).
import { svg } from './charts.js';
import { shape, si } from './util.js';

const W = 200, H = 40, GAP_X = 28, GAP_Y = 44, PAD = 40;

function joinKind(row, types) {
  if (row.kind !== 'op' || row.inputs.length < 2) return '';
  if (row.type === 'add') return 'add';
  if (row.type === 'cat') return 'cat';
  if (row.type === 'mul') return 'gate';
  return '';
}

// Rows -> visible nodes and edges, given the set of expanded module paths.
export function buildGraph(detail, expanded) {
  const modules = new Map(detail.modules.map((m) => [m.name, m.type]));
  const nodeOf = new Map();
  const nodes = new Map();
  const visibleId = (row) => {
    const parts = row.name.split(' ')[0].split('.');
    for (let i = 1; i <= parts.length; i++) {
      const p = parts.slice(0, i).join('.');
      if (modules.has(p) && !expanded.has(p) && p !== row.name) return p;
    }
    return row.name;
  };
  for (const row of detail.rows) {
    if (row.kind === 'unused' || row.kind === 'params') continue;
    const id = visibleId(row);
    nodeOf.set(row.name, id);
    let n = nodes.get(id);
    if (!n) {
      const isModule = id !== row.name;
      n = { id, module: isModule, type: isModule ? modules.get(id) : row.type, kind: isModule ? 'module' : joinKind(row),
            rows: 0, params: 0, macs: 0, activation_values: 0, output_shape: null, preds: new Set(), order: nodes.size };
      nodes.set(id, n);
    }
    n.rows += 1; n.params += row.params; n.macs += row.macs; n.activation_values += row.activation_values;
    if (row.output_shape) n.output_shape = row.output_shape;
    for (const src of row.inputs) {
      const u = nodeOf.get(src);
      if (u !== undefined && u !== id) n.preds.add(u);
    }
  }
  // Rows that read nothing and cost nothing (Identity placeholders) are not drawn.
  const used = new Set([...nodes.values()].flatMap((n) => [...n.preds]));
  for (const [id, n] of nodes) {
    if (!n.preds.size && !used.has(id) && id !== 'input' && !n.params && !n.macs) nodes.delete(id);
  }
  return [...nodes.values()];
}

// Longest-path layers; nodes of one layer side by side in order of first appearance.
export function layout(nodes) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  for (const n of nodes) {
    n.layer = 0;
    for (const p of n.preds) if (byId.has(p)) n.layer = Math.max(n.layer, byId.get(p).layer + 1);
  }
  const layers = [];
  for (const n of nodes) (layers[n.layer] ||= []).push(n);
  const widest = Math.max(...layers.map((l) => l.length));
  const width = widest * (W + GAP_X) + 2 * PAD + 120;
  layers.forEach((layer, li) => layer.forEach((n, i) => {
    n.x = PAD + (width - 120 - 2 * PAD) / 2 + (i - (layer.length - 1) / 2) * (W + GAP_X) - W / 2;
    n.y = PAD + li * (H + GAP_Y);
  }));
  return { width, height: PAD * 2 + layers.length * (H + GAP_Y), byId };
}

export function drawDiagram(detail, expanded, onToggle) {
  const nodes = buildGraph(detail, expanded);
  const { width, height, byId } = layout(nodes);
  const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, id: 'block-diagram' });
  // Dashed frames around expanded modules (click the title to collapse).
  const frames = svg('g', {});
  const depth = (m) => m.split('.').length;
  const shown = [...expanded].filter((m) => nodes.some((n) => n.id.startsWith(m + '.')));
  // frames nest: a frame holding k levels of expanded frames is padded by k steps
  const nest = (m) => Math.max(0, ...shown.filter((o) => o.startsWith(m + '.')).map((o) => depth(o) - depth(m)));
  for (const m of shown.sort((a, b) => depth(a) - depth(b))) {
    const inside = nodes.filter((n) => n.id.startsWith(m + '.'));
    const k = nest(m);
    const x0 = Math.min(...inside.map((n) => n.x)) - 8 - 6 * k, x1 = Math.max(...inside.map((n) => n.x + W)) + 8 + 6 * k;
    const y0 = Math.min(...inside.map((n) => n.y)) - 16 - 14 * k, y1 = Math.max(...inside.map((n) => n.y + H)) + 6 + 4 * k;
    frames.append(svg('g', { class: 'group', 'data-module': m },
      svg('rect', { x: x0, y: y0, width: x1 - x0, height: y1 - y0, rx: 6 }),
      svg('text', { x: x0 + 6, y: y0 + 11 }, `− ${m}`, svg('title', {}, `${m}: click to collapse`))));
  }
  root.append(frames);
  const edges = svg('g', {});
  for (const n of nodes) {
    for (const p of n.preds) {
      const u = byId.get(p);
      if (!u) continue;
      const x1 = u.x + W / 2, y1 = u.y + H, x2 = n.x + W / 2, y2 = n.y;
      let d;
      if (n.layer - u.layer > 1 && Math.abs(x1 - x2) < W) {
        // a skip connection: route it beside the column so it does not cross the boxes
        const side = Math.max(x1, x2) + W / 2 + 16 + 6 * ((n.layer - u.layer) % 4);
        d = `M${x1 + W / 2},${y1 - H / 2} C${side},${y1 - H / 2} ${side},${y2 + H / 2} ${x2 + W / 2},${y2 + H / 2}`;
      } else {
        const my = (y1 + y2) / 2;
        d = `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`;
      }
      edges.append(svg('path', { class: 'edge', d, 'marker-end': 'url(#arrow)' }));
    }
  }
  root.append(svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 8 8', refX: 7, refY: 4, markerWidth: 6, markerHeight: 6, orient: 'auto' },
    svg('path', { d: 'M0,0 L8,4 L0,8 z', fill: '#9aa6b2' }))), edges);
  for (const n of nodes) {
    // inside an expanded module's frame, the path below it is enough (the frame names it)
    const parent = [...expanded].filter((m) => n.id.startsWith(m + '.')).sort((a, b) => b.length - a.length)[0];
    const short = parent ? n.id.slice(parent.length + 1) : n.id;
    const label = n.module ? `+ ${short}` : short;
    const extra = n.kind === 'add' ? 'residual add' : n.kind === 'cat' ? 'concatenation' : n.kind === 'gate' ? 'gate multiply' : n.type;
    const g = svg('g', { class: `node ${n.kind}`, 'data-node': n.id, transform: `translate(${n.x},${n.y})` },
      svg('rect', { width: W, height: H, rx: 5 }),
      svg('text', { x: 6, y: 14, 'font-weight': 600 }, label.length > 28 ? '…' + label.slice(-27) : label),
      svg('text', { x: 6, y: 28, fill: '#555' }, `${extra} · ${shape(n.output_shape)}`),
      svg('text', { x: W - 6, y: 28, 'text-anchor': 'end', fill: '#777' }, n.params ? si(n.params) + 'p' : n.macs ? si(n.macs) + ' MACs' : ''),
      svg('title', {}, `${n.id} (${n.type}${n.module ? `, ${n.rows} rows: click to expand` : ''})\n` +
        `output ${shape(n.output_shape)} · params ${n.params.toLocaleString('en-US')} · MACs ${n.macs.toLocaleString('en-US')}`));
    if (n.module) g.addEventListener('click', () => onToggle(n.id, true));
    root.append(g);
  }
  for (const f of frames.children) f.querySelector('text').addEventListener('click', () => onToggle(f.dataset.module, false));
  return root;
}
