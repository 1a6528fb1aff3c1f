// One model: its facts, the analyser's table at a typed input size (recomputed on the
// server), the block diagram with collapsible modules, and per-stage charts.
import { h, api, int, fixed, si, shape, size, rfText, bytes, hashFor, setHash, errorBox } from '../util.js';
import { barChart } from '../charts.js';
import { drawDiagram } from '../diagram.js';

export function stageCharts(entries) {
  // entries: [{name, stages}] — one series per model, stages aligned by position.
  const longest = entries.reduce((a, e) => (e.stages.length > a.length ? e.stages : a), []);
  const labels = entries.length === 1 ? longest.map((s) => s.name) : longest.map((_, i) => `#${i}`);
  const metric = (title, get, format, log) => h('div', { class: 'chart' }, h('h3', {}, title),
    barChart({ labels, series: entries.map((e) => ({ name: e.name, values: e.stages.map(get) })), format, log }));
  return h('div', { class: 'charts', id: 'stage-charts' },
    metric('parameters per stage', (s) => s.params, si),
    metric('MACs per stage', (s) => s.macs, si),
    metric('activation memory per stage (values)', (s) => s.activation_values, si),
    metric('receptive field at the stage output (pixels)', (s) => (s.receptive_field ? [].concat(s.receptive_field.size)[0] : null), (v) => String(Math.round(v))));
}

const TABLE = [
  ['layer', (r) => r.name], ['type', (r) => r.type], ['output', (r) => shape(r.output_shape)],
  ['params', (r) => int(r.params), 'num'], ['MACs', (r) => int(r.macs), 'num'],
  ['other ops', (r) => int(r.other_ops), 'num'], ['memory (values)', (r) => int(r.activation_values), 'num'],
  ['RF size', (r) => rfText(r.receptive_field), 'num'],
  ['jump', (r) => (r.receptive_field ? [].concat(r.receptive_field.jump).join('×') : ''), 'num'],
  ['start', (r) => (r.receptive_field ? [].concat(r.receptive_field.start).join('×') : ''), 'num'],
  ['notes', (r) => r.notes.join('; ')],
];

export async function renderModel(root, name, params) {
  const models = await api('/api/models');
  const info = models.models.find((m) => m.name === name);
  if (!info) { await api(`/api/models/${encodeURIComponent(name)}`); return; }  // the server's 404 message
  const inputText = params.get('input') || size(info.input_size);
  const expanded = new Set((params.get('expand') || '').split(',').filter(Boolean));
  const filter = params.get('filter') || '';

  const form = h('form', { class: 'toolbar', id: 'input-form' },
    h('label', {}, 'input size ', h('input', { id: 'input-size', name: 'input', value: inputText, size: 14, 'aria-label': 'input size CxHxW' })),
    h('button', { type: 'submit' }, 'Analyse'),
    h('a', { href: hashFor('compare', '', { models: [name] }) }, 'compare with…'),
    h('span', { class: 'muted' }, `published at ${size(info.input_size)}`));
  const status = h('div', { id: 'model-status' });
  const content = h('div', { id: 'model-content' });
  root.append(...[
    h('h1', {}, name, h('span', { class: 'muted', style: 'font-weight:400' }, ` · ${info.family} · ${info.year}`)),
    h('p', {}, h('a', { href: info.url, rel: 'noreferrer' }, info.title), ` — ${info.authors}.`,
      info.top1 !== null ? ` Published top-1 ${fixed(info.top1, 2)}% (${info.dataset}${info.error_source ? ', ' + info.error_source : ''}).` : '',
      info.recipe ? ` Default recipe ${info.recipe}.` : ''),
    info.deviations.length ? h('details', {}, h('summary', {}, `${info.deviations.length} deviation(s) from the paper`),
      h('ul', {}, info.deviations.map((d) => h('li', {}, d)))) : null,
    form, status, content].filter(Boolean));

  let detail;
  try {
    status.replaceChildren(h('p', { class: 'muted' }, `analysing ${name} at ${inputText}…`));
    detail = await api(`/api/models/${encodeURIComponent(name)}?input=${encodeURIComponent(inputText)}`);
    status.replaceChildren();
  } catch (e) {
    status.replaceChildren(errorBox(e));
  }
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = hashFor('model', name, { input: form.input.value.trim(), expand: [...expanded] });
  });
  if (!detail) return;

  const t = detail.totals;
  const canonical = () => hashFor('model', name, { input: size(detail.input), expand: [...expanded].sort(), filter: tableFilter.value });
  content.append(h('div', { class: 'cards', id: 'totals' },
    [['parameters', int(t.params), 'total-params'], ['MACs', int(t.macs), 'total-macs'], ['FLOPs (2×MACs)', si(t.flops), 'total-flops'],
     ['activation memory', `${int(t.activation_values)} values`, 'total-activations'], ['… in float32', bytes(t.activation_bytes), 'total-bytes'],
     ['receptive field (features)', t.receptive_field ? `${rfText(t.receptive_field)}${t.receptive_field.global ? ' (global)' : ''}` : '—', 'total-rf'],
     ['training memory, SGD, batch 1', bytes(t.training_bytes_sgd_batch1), 'total-train']]
      .map(([k, v, id]) => h('div', { class: 'card' }, h('span', { class: 'muted' }, k), h('b', { id }, v)))));
  if (detail.unaccounted.length) content.append(h('details', { class: 'error' }, h('summary', {}, `${detail.unaccounted.length} op(s) the analyser cannot account for`), h('ul', {}, detail.unaccounted.map((u) => h('li', {}, u)))));

  content.append(h('h2', {}, 'Per stage'), stageCharts([{ name, stages: detail.stages }]));

  // The block diagram and the module tree that collapses and expands it.
  const diagramBox = h('div', { class: 'diagram' });
  const tree = h('div', { class: 'tree', id: 'module-tree' });
  const redraw = () => {
    diagramBox.replaceChildren(drawDiagram(detail, expanded, toggle));
    tree.replaceChildren(moduleTree(detail.modules, expanded, toggle));
    setHash(canonical());
  };
  const toggle = (m, open) => {
    if (open) { expanded.add(m); for (let p = m; p.includes('.'); ) { p = p.slice(0, p.lastIndexOf('.')); expanded.add(p); } }
    else for (const e of [...expanded]) if (e === m || e.startsWith(m + '.')) expanded.delete(e);
    redraw();
  };
  content.append(h('h2', {}, 'Block diagram'),
    h('p', { class: 'legend' }, h('span', {}, h('i', { style: 'background:#eef3f9;border:1px solid #3b6ea5' }), 'module (click to expand)'),
      h('span', {}, h('i', { style: 'background:#fdf1e4;border:1px solid #d9822b' }), 'residual add'),
      h('span', {}, h('i', { style: 'background:#e8f5ee;border:1px solid #2f8f5b' }), 'concatenation'),
      h('span', {}, h('i', { style: 'background:#f3ebfa;border:1px solid #8a4fbf' }), 'gate multiply (SE)'),
      h('button', { type: 'button', id: 'collapse-all', onclick: () => { expanded.clear(); redraw(); } }, 'collapse all')),
    h('div', { class: 'split' }, h('div', { class: 'scroll' }, tree), diagramBox));

  // The analyser's table.
  const tableFilter = h('input', { type: 'search', id: 'layer-filter', placeholder: 'filter layers', value: filter });
  const tbody = h('tbody');
  const drawTable = () => {
    const q = tableFilter.value.toLowerCase();
    tbody.replaceChildren(...detail.rows.filter((r) => !q || `${r.name} ${r.type}`.toLowerCase().includes(q))
      .map((r) => h('tr', { class: `kind-${r.kind}`, 'data-row': r.name }, TABLE.map(([, f, c]) => h('td', { class: c || '' }, f(r))))));
    setHash(canonical());
  };
  tableFilter.addEventListener('input', drawTable);
  content.append(h('h2', {}, `Layers at ${size(detail.input)} (${detail.rows.length} rows)`),
    h('div', { class: 'toolbar' }, tableFilter, h('span', { class: 'muted' }, detail.conventions)),
    h('div', { class: 'scroll' }, h('table', { id: 'layers-table' },
      h('thead', {}, h('tr', {}, TABLE.map(([k, , c]) => h('th', { class: c || '' }, k)))), tbody,
      h('tfoot', {}, h('tr', {}, h('th', {}, 'total'), h('th'), h('th'), h('th', { class: 'num' }, int(t.params)),
        h('th', { class: 'num' }, int(t.macs)), h('th', { class: 'num' }, int(t.other_ops)),
        h('th', { class: 'num' }, int(t.activation_values)), h('th'), h('th'), h('th'), h('th'))))));
  redraw();
  drawTable();
}

function moduleTree(modules, expanded, toggle) {
  const children = new Map([['', []]]);
  for (const m of modules) {
    const parent = m.name.includes('.') ? m.name.slice(0, m.name.lastIndexOf('.')) : '';
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(m);
    if (!children.has(m.name)) children.set(m.name, []);
  }
  const list = (parent) => h('ul', {}, children.get(parent).map((m) => {
    const open = expanded.has(m.name);
    const kids = children.get(m.name);
    return h('li', {}, h('button', { type: 'button', 'data-module': m.name, 'aria-expanded': String(open),
      onclick: () => toggle(m.name, !open) }, open ? '−' : '+'), ` ${m.name.split('.').pop()} `,
      h('span', { class: 'muted' }, m.type), open && kids.length ? list(m.name) : null);
  }));
  return list('');
}
