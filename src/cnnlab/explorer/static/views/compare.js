// Two or more models side by side (per-stage charts overlaid, totals), and the top-1 vs
// GMACs bubble chart (area = parameters) with the user's runs added.
import { h, api, int, fixed, size, rfText, natural, hashFor, setHash, errorBox } from '../util.js';
import { bubbleChart, COLORS } from '../charts.js';
import { stageCharts } from './model.js';
import { gmacsOf } from './models.js';

export async function renderCompare(root, _arg, params) {
  const [{ models }, runs] = await Promise.all([api('/api/models'), api('/api/runs').catch(() => ({ runs: [] }))]);
  const names = (params.get('models') || '').split(',').filter(Boolean);
  const byName = new Map(models.map((m) => [m.name, m]));
  const picked = names.filter((n) => byName.has(n));
  const unknown = names.filter((n) => !byName.has(n));
  const dataset = params.get('dataset') || (picked.length ? byName.get(picked[0]).dataset : 'imagenet');
  const go = (list, ds = dataset) => { location.hash = hashFor('compare', '', { models: list, dataset: ds }); };

  const choose = h('input', { id: 'compare-add', list: 'model-names', placeholder: 'add a model', size: 22 });
  const form = h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); if (byName.has(choose.value)) go([...picked, choose.value]); } },
    choose, h('datalist', { id: 'model-names' }, [...byName.keys()].sort(natural).map((n) => h('option', { value: n }))),
    h('button', { type: 'submit' }, 'Add'),
    picked.map((n, i) => h('span', { class: 'pill', style: `border-color:${COLORS[i % COLORS.length]}` }, n, ' ',
      h('a', { href: '#', title: `remove ${n}`, onclick: (e) => { e.preventDefault(); go(picked.filter((x) => x !== n)); } }, '×'))));
  root.append(h('h1', {}, 'Compare'), form);
  if (unknown.length) root.append(h('p', { class: 'error' }, `unknown model(s): ${unknown.join(', ')}`));
  setHash(hashFor('compare', '', { models: picked, dataset: params.get('dataset') || '' }));

  const details = await Promise.all(picked.map((n) => api(`/api/models/${n}`).catch((e) => ({ error: e }))));
  const ok = details.map((d, i) => ({ name: picked[i], d })).filter((x) => !x.d.error);
  for (const x of details.filter((d) => d.error)) root.append(errorBox(x.error));
  if (ok.length) {
    const rows = [['input', (d) => size(d.input)], ['parameters', (d) => int(d.totals.params)], ['MACs', (d) => int(d.totals.macs)],
      ['activation values', (d) => int(d.totals.activation_values)], ['receptive field', (d) => rfText(d.totals.receptive_field)],
      ['published top-1 (%)', (d) => fixed(d.info.top1, 2)], ['stages', (d) => d.stages.map((s) => s.name).join(', ')]];
    root.append(h('table', { id: 'compare-table' }, h('thead', {}, h('tr', {}, h('th'), ok.map((x) => h('th', {}, h('a', { href: hashFor('model', x.name) }, x.name))))),
      h('tbody', {}, rows.map(([k, f]) => h('tr', {}, h('th', {}, k), ok.map((x) => h('td', { class: 'num' }, f(x.d))))))),
      h('h2', {}, 'Per stage (stem, the stages of feature_info, head; aligned by position)'),
      stageCharts(ok.map((x) => ({ name: x.name, stages: x.d.stages }))));
  } else {
    root.append(h('p', { class: 'muted' }, 'Add two or more models to compare them stage by stage.'));
  }

  // The bubble chart: published top-1 against GMACs (published, else computed above).
  const measured = new Map(ok.map((x) => [x.name, x.d.totals.macs / 1e9]));
  const datasets = [...new Set(models.map((m) => m.dataset))].sort();
  const dsSelect = h('select', { id: 'bubble-dataset', onchange: () => go(picked, dsSelect.value) },
    datasets.map((d) => h('option', { value: d, selected: d === dataset }, d)));
  const maxParams = Math.max(...models.map((m) => m.params));
  const points = models.filter((m) => m.dataset === dataset && m.top1 !== null && (gmacsOf(m) !== null || measured.has(m.name)))
    .map((m) => {
      const i = picked.indexOf(m.name);
      const gmacs = gmacsOf(m) ?? measured.get(m.name);
      return { label: m.name, x: gmacs, y: m.top1, r: 3 + 27 * Math.sqrt(m.params / maxParams),
               color: i >= 0 ? COLORS[i % COLORS.length] : '#8896a5', highlight: i >= 0,
               title: `${m.name}: ${fixed(m.top1, 2)}% top-1, ${fixed(gmacs)} GMACs, ${int(m.params)} params` };
    });
  for (const r of runs.runs || []) {
    const m = byName.get(r.model);
    const top1 = r.best.test_top1 ?? r.best.val_top1;
    if (!m || top1 === undefined || !(r.data || '').startsWith(dataset)) continue;  // cifar10, mnist-sample -> mnist
    const gmacs = gmacsOf(m) ?? measured.get(m.name);
    if (!gmacs) continue;
    points.push({ label: `run ${r.id}`, x: gmacs, y: top1, r: 6, color: '#b3261e', shape: 'diamond',
                  title: `run ${r.id} (${r.model} on ${r.data}): best ${fixed(top1, 2)}%` });
  }
  root.append(h('h2', {}, 'Top-1 accuracy vs GMACs (area = parameters)'),
    h('div', { class: 'toolbar' }, h('label', {}, 'dataset ', dsSelect),
      h('span', { class: 'muted' }, `${points.length} points; grey: the zoo (published top-1), colour: compared models, red diamonds: your runs (best test or val top-1). GMACs: published, else the analyser's.`)),
    h('div', { class: 'chart', id: 'bubble-chart' }, bubbleChart({ points, xLabel: 'GMACs (log scale)', yLabel: 'top-1 (%)' })));
}
