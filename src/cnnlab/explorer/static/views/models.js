// The models page: the zoo as a searchable, sortable, filterable table.
import { h, api, int, fixed, size, natural, hashFor, setHash } from '../util.js';

// Published GMACs, else the analyser's at the model's input (once the server has it).
export const gmacsOf = (m) => (m.gmacs !== null ? m.gmacs : m.macs_measured !== null ? m.macs_measured / 1e9 : null);

const COLUMNS = [
  { key: 'name', label: 'model', text: (m) => m.name, link: true },
  { key: 'family', label: 'family', text: (m) => m.family },
  { key: 'year', label: 'year', text: (m) => m.year, num: true },
  { key: 'params', label: 'params', text: (m) => int(m.params), num: true },
  { key: 'gmacs', label: 'GMACs', num: true, value: (m) => gmacsOf(m),
    text: (m) => (m.gmacs !== null ? fixed(m.gmacs) : m.macs_measured !== null ? h('i', { title: 'computed by the analyser (the paper states none)' }, fixed(m.macs_measured / 1e9)) : '') },
  { key: 'input', label: 'input', text: (m) => size(m.input_size), value: (m) => m.input_size[1] },
  { key: 'dataset', label: 'dataset', text: (m) => m.dataset },
  { key: 'top1', label: 'top-1 (%)', text: (m) => fixed(m.top1, 2), num: true },
  { key: 'recipe', label: 'default recipe', text: (m) => m.recipe },
];

export async function renderModels(root, _arg, params) {
  const { models } = await api('/api/models');
  const state = { q: params.get('q') || '', family: params.get('family') || '',
                  dataset: params.get('dataset') || '', sort: params.get('sort') || 'name',
                  dir: params.get('dir') === 'desc' ? 'desc' : 'asc' };
  const families = [...new Set(models.map((m) => m.family))].sort();
  const datasets = [...new Set(models.map((m) => m.dataset))].sort();
  const option = (v, cur) => h('option', { value: v, selected: v === cur }, v || 'all');

  const search = h('input', { type: 'search', id: 'model-search', placeholder: 'search: name, family, paper…',
                              value: state.q, size: 28, 'aria-label': 'search models' });
  const family = h('select', { id: 'family-filter', 'aria-label': 'family' }, option('', state.family),
                   families.map((f) => option(f, state.family)));
  const dataset = h('select', { id: 'dataset-filter', 'aria-label': 'dataset' }, option('', state.dataset),
                    datasets.map((d) => option(d, state.dataset)));
  const count = h('span', { class: 'muted' });
  const head = h('tr');
  const body = h('tbody');
  root.append(h('h1', {}, 'Models'),
    h('div', { class: 'toolbar' }, search, h('label', {}, 'family ', family), h('label', {}, 'dataset ', dataset), count),
    h('div', { class: 'scroll' }, h('table', { id: 'models-table' }, h('thead', {}, head), body)),
    h('p', { class: 'muted' }, 'GMACs: published multiply-accumulates at the model\'s input; in italics, computed by the analyser where the paper states none. A model\'s page computes them at any size. Top-1: published accuracy.'));

  function draw() {
    setHash(hashFor('models', '', { q: state.q, family: state.family, dataset: state.dataset,
                                    sort: state.sort === 'name' ? '' : state.sort,
                                    dir: state.dir === 'asc' ? '' : state.dir }));
    head.replaceChildren(...COLUMNS.map((c) => h('th', {
      class: `sortable${c.num ? ' num' : ''}${state.sort === c.key ? ' sorted-' + state.dir : ''}`,
      'data-key': c.key,
      onclick: () => { state.dir = state.sort === c.key && state.dir === 'asc' ? 'desc' : 'asc'; state.sort = c.key; draw(); },
    }, c.label)));
    const words = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    const col = COLUMNS.find((c) => c.key === state.sort) || COLUMNS[0];
    const value = col.value || ((m) => m[col.key]);
    const rows = models
      .filter((m) => (!state.family || m.family === state.family) && (!state.dataset || m.dataset === state.dataset))
      .filter((m) => words.every((w) => `${m.name} ${m.family} ${m.title} ${m.authors} ${m.year}`.toLowerCase().includes(w)))
      .sort((a, b) => {
        const va = value(a), vb = value(b);
        if (va === null || va === undefined) return 1;  // blanks last either way
        if (vb === null || vb === undefined) return -1;
        const c = typeof va === 'number' ? va - vb : natural(String(va), String(vb));
        return (state.dir === 'asc' ? c : -c) || natural(a.name, b.name);
      });
    count.textContent = `${rows.length} of ${models.length} models`;
    body.replaceChildren(...rows.map((m) => h('tr', { 'data-model': m.name }, COLUMNS.map((c) => h('td', { class: c.num ? 'num' : '' },
      c.link ? h('a', { href: hashFor('model', m.name), title: m.title }, m.name) : c.text(m))))));
  }
  search.addEventListener('input', () => { state.q = search.value; draw(); });
  family.addEventListener('change', () => { state.family = family.value; draw(); });
  dataset.addEventListener('change', () => { state.dataset = dataset.value; draw(); });
  draw();
}
