// The explorer's router: each view renders from the URL hash alone, so every view has a link.
import { h, parseHash, errorBox } from './util.js';
import { renderModels } from './views/models.js';
import { renderModel } from './views/model.js';
import { renderCompare } from './views/compare.js';
import { renderRuns } from './views/runs.js';
import { renderLectures } from './views/lectures.js';

const VIEWS = { models: renderModels, model: renderModel, compare: renderCompare,
                runs: renderRuns, lectures: renderLectures };
const main = document.getElementById('view');
let rendering = 0;

async function route() {
  const { view, arg, params } = parseHash(location.hash);
  const render = VIEWS[view];
  for (const a of document.querySelectorAll('nav a')) {
    a.classList.toggle('active', a.dataset.view === view || (view === 'model' && a.dataset.view === 'models'));
  }
  const token = ++rendering;
  const root = h('div', { class: `view-${view}` });
  main.replaceChildren(root);
  document.body.dataset.ready = 'false';
  try {
    if (!render) throw new Error(`no view "${view}": try #/models`);
    await render(root, arg, params);
  } catch (e) {
    if (token === rendering) root.append(errorBox(e));
  }
  if (token === rendering) document.body.dataset.ready = 'true';
}

window.addEventListener('hashchange', route);
route();
