// The lecture-numbers tables, live from cnnlab.analysis.lectures (the code that writes
// docs/lecture-numbers.md): a small Markdown subset rendered safely (text, never HTML).
import { h, api } from '../util.js';

function inline(text) {
  // **bold** and `code`; everything else is text.
  const out = [];
  const re = /(\*\*[^*]+\*\*|`[^`]+`)/g;
  let last = 0, m;
  while ((m = re.exec(text))) {
    if (m.index > last) out.push(text.slice(last, m.index));
    out.push(m[0].startsWith('**') ? h('b', {}, m[0].slice(2, -2)) : h('code', {}, m[0].slice(1, -1)));
    last = m.index + m[0].length;
  }
  out.push(text.slice(last));
  return out;
}

export function markdown(md) {
  const blocks = md.trim().split(/\n\s*\n/);
  return blocks.map((block) => {
    const lines = block.split('\n');
    if (lines[0].startsWith('|')) {
      const cells = (l) => l.replace(/^\||\|$/g, '').split('|').map((c) => c.trim());
      const right = cells(lines[1]).map((c) => c.endsWith(':'));
      return h('table', {}, h('thead', {}, h('tr', {}, cells(lines[0]).map((c, i) => h('th', { class: right[i] ? 'num' : '' }, c)))),
        h('tbody', {}, lines.slice(2).map((l) => h('tr', {}, cells(l).map((c, i) => h('td', { class: right[i] ? 'num' : '' }, inline(c)))))));
    }
    if (lines[0].startsWith('- ')) return h('ul', {}, lines.map((l) => h('li', {}, inline(l.replace(/^- /, '')))));
    return h('p', {}, inline(lines.join(' ')));
  });
}

export async function renderLectures(root, arg) {
  const { sections } = await api('/api/lectures');
  root.append(h('h1', {}, 'The lectures\' numbers'),
    h('p', { class: 'muted' }, 'Recomputed now by the analyser, from the same code as docs/lecture-numbers.md.'),
    h('p', {}, sections.map((s) => h('a', { class: 'pill', href: `#/lectures/${s.id}` }, s.title))));
  for (const s of sections) {
    root.append(h('section', { class: 'lecture', id: `lecture-${s.id}` }, h('h2', {}, s.title), markdown(s.markdown)));
  }
  if (arg) document.getElementById(`lecture-${arg}`)?.scrollIntoView();
}
