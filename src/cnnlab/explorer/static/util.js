// Small helpers shared by every view: DOM building, the JSON API, number formats, URLs.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export class ApiError extends Error {}

// GET a JSON API route; an error answer becomes an ApiError carrying the server's message.
export async function api(path) {
  let res;
  try {
    res = await fetch(path);
  } catch (e) {
    throw new ApiError(`cannot reach the explorer server (${e.message})`);
  }
  let body;
  try { body = await res.json(); } catch { body = { error: `${res.status} ${res.statusText}` }; }
  if (!res.ok) throw new ApiError(body.error || `${res.status} ${res.statusText}`);
  return body;
}

export const int = (v) => (v === null || v === undefined ? '' : Math.round(v).toLocaleString('en-US'));
export const fixed = (v, d = 3) => (v === null || v === undefined ? '' : Number(v).toFixed(d));
export function si(v) {
  if (v === null || v === undefined) return '';
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(2) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(2) + 'M';
  if (a >= 1e3) return (v / 1e3).toFixed(1) + 'K';
  return String(Math.round(v * 100) / 100);
}
export const shape = (s) => (s ? s.slice(1).join('x') : '');
export const size = (s) => s.join('x');
export function rfText(rf) {
  if (!rf) return '';
  const f = (v) => (Array.isArray(v) ? v.join('×') : String(v));
  return f(rf.size);
}
export const bytes = (b) => (b >= 2 ** 30 ? (b / 2 ** 30).toFixed(2) + ' GiB'
  : b >= 2 ** 20 ? (b / 2 ** 20).toFixed(1) + ' MiB' : (b / 1024).toFixed(1) + ' KiB');

// Natural order: resnet18 < resnet50 < resnet101.
export const natural = new Intl.Collator('en', { numeric: true }).compare;

// The hash route: "#/model/vgg16?input=3x224x224&expand=features" -> {view, arg, params}.
export function parseHash(hash) {
  const [path, query = ''] = hash.replace(/^#\/?/, '').split('?');
  const [view = 'models', ...rest] = path.split('/');
  return { view: view || 'models', arg: rest.map(decodeURIComponent).join('/'),
           params: new URLSearchParams(query) };
}

export function hashFor(view, arg = '', params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== '' && !(Array.isArray(v) && !v.length)) {
      q.set(k, Array.isArray(v) ? v.join(',') : v);
    }
  }
  const qs = q.toString().replace(/%2C/g, ',');
  return `#/${view}${arg ? '/' + encodeURIComponent(arg) : ''}${qs ? '?' + qs : ''}`;
}

// Replace the URL without re-rendering (the view already shows that state).
export function setHash(hash) {
  if (location.hash !== hash) history.replaceState(null, '', hash);
}

export function errorBox(e) {
  return h('p', { class: 'error', role: 'alert' }, e instanceof ApiError ? e.message : String(e));
}
