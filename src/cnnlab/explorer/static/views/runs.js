// The user's training runs: their error curves per epoch, the recipe and the final metrics.
import { h, api, fixed, int, hashFor, errorBox } from '../util.js';
import { lineChart } from '../charts.js';

export async function renderRuns(root, runId, params) {
  const id = runId || params.get('run') || '';
  const listing = await api('/api/runs');
  root.append(h('h1', {}, 'Runs'));
  if (!listing.root) {
    root.append(h('p', { class: 'muted' }, 'No runs folder: start the explorer with ', h('code', {}, 'cnnlab serve --runs DIR'), '.'));
    return;
  }
  root.append(h('table', { id: 'runs-table' }, h('thead', {}, h('tr', {}, ['run', 'model', 'data', 'recipe', 'epochs', 'final train top-1', 'final val top-1', 'final test top-1', 'best test top-1'].map((c) => h('th', {}, c)))),
    h('tbody', {}, listing.runs.map((r) => h('tr', { 'data-run': r.id },
      h('td', {}, h('a', { href: hashFor('runs', r.id) }, r.id)), h('td', {}, r.model || ''), h('td', {}, r.data || ''), h('td', {}, r.recipe || ''),
      h('td', { class: 'num' }, r.epochs), ...['train_top1', 'val_top1', 'test_top1'].map((k) => h('td', { class: 'num' }, fixed(r.final[k], 2))),
      h('td', { class: 'num' }, fixed(r.best.test_top1, 2)))))));
  if (!listing.runs.length) root.append(h('p', { class: 'muted' }, 'The runs folder holds no run (a folder with metrics.jsonl).'));
  if (!id) return;
  let run;
  try { run = await api(`/api/runs/${encodeURIComponent(id)}`); } catch (e) { root.append(errorBox(e)); return; }
  const curve = (split) => run.history.filter((r) => r[`${split}_top1`] !== null && r[`${split}_top1`] !== undefined)
    .map((r) => [r.epoch, 100 - r[`${split}_top1`]]);
  const section = h('section', { id: 'run-detail' }, h('h2', {}, `${run.id}: ${run.model || '?'} on ${run.data || '?'}`));
  if (run.error) section.append(h('p', { class: 'error' }, run.error));
  section.append(h('div', { class: 'chart', id: 'run-curves' }, h('h3', {}, 'top-1 error per epoch (%)'),
    lineChart({ series: [{ name: 'train', points: curve('train') }, { name: 'val', points: curve('val'), dash: '6 3' },
                         { name: 'test', points: curve('test'), dash: '2 2' }], xLabel: 'epoch', yLabel: 'top-1 error (%)',
                logY: true, xInteger: true, format: (v) => String(+v.toPrecision(3)) })));
  const f = run.final;
  const facts = h('div', { class: 'cards' });
  facts.append(h('div', {}, h('h3', {}, 'Final metrics'), h('table', { id: 'run-final' }, h('tbody', {},
    Object.entries(f).map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', { class: 'num' }, typeof v === 'number' ? (Number.isInteger(v) ? int(v) : fixed(v, 4)) : String(v))))))));
  if (run.config) {
    facts.append(h('div', {}, h('h3', {}, `Recipe ${run.recipe || ''}`), h('table', { id: 'run-recipe' }, h('tbody', {},
      Object.entries(run.config).map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, typeof v === 'object' ? JSON.stringify(v) : String(v))))))));
  }
  if (run.run) {
    facts.append(h('div', {}, h('h3', {}, 'Run'), h('table', { id: 'run-facts' }, h('tbody', {},
      Object.entries(run.run).map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, typeof v === 'object' ? JSON.stringify(v) : String(v))))))));
  }
  section.append(facts);
  section.append(h('p', { class: 'muted' }, `files: ${run.files.join(', ')}`));
  root.append(section);
}
