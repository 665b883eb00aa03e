// The console's shared pieces: the API call with the operator's key, the page's state, and
// small DOM helpers that write text, never HTML.

export const KEY_STORAGE = 'messaging-server.admin-key';

export const $ = (id) => document.getElementById(id);

export const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || '',
  previous: null,
  history: [],
  lastDlqSize: null,
  dlqPage: 1,
  dlqTotal: 0,
  conversationsPage: 1,
  conversationsTotal: 0,
  auditPage: 1,
  conversation: null,
  statsTimer: null,
  lookupTimer: null,
  ticks: 0,
};

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
  }
}

export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const json = body === undefined ? undefined : JSON.stringify(body);
  const response = await fetch(path, { method, headers, body: json, cache: 'no-store' });
  const text = await response.text();
  let answer = null;
  if (text) {
    try {
      answer = JSON.parse(text);
    } catch {
      answer = { detail: text.slice(0, 200) };
    }
  }
  if (!response.ok) throw new ApiError(response.status, answer);
  return answer;
}

/// A list's page, or null once its failure is reported (`what` says what was read).
export async function list(path, what) {
  try {
    return await api(path);
  } catch (err) {
    failed(what, err);
    return null;
  }
}

// ---- small DOM helpers ----------------------------------------------------------------

export function el(tag, { text, className, title, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  if (title) node.title = title;
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

export function button(label, onClick, { className = 'small', ariaLabel } = {}) {
  const b = el('button', { text: label, className, attrs: { type: 'button' } });
  if (ariaLabel) b.setAttribute('aria-label', ariaLabel);
  b.addEventListener('click', onClick);
  return b;
}

export function when(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function shorten(text, max) {
  if (text === null || text === undefined) return '';
  const s = String(text);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

export function notify(message, { error = false } = {}) {
  const notice = $('notice');
  notice.textContent = message;
  notice.classList.toggle('error', error);
}

export function emptyRow(tbody, columns, message) {
  tbody.replaceChildren(
    el('tr', { className: 'empty' }, [el('td', { text: message, attrs: { colspan: String(columns) } })]),
  );
}

export function pageCount(total, pageSize) {
  return Math.max(1, Math.ceil(total / pageSize));
}

/// Says which page of `pages` is shown under a table (`count`: how many rows in all) and
/// enables the pager's buttons, `${prefix}-prev` and `${prefix}-next`.
export function showPage(prefix, page, pages, count) {
  $(`${prefix}-page`).textContent = `Page ${page} of ${pages} · ${count}`;
  $(`${prefix}-prev`).disabled = page <= 1;
  $(`${prefix}-next`).disabled = page >= pages;
}

/// Reports a failed call; a 401/403 means the key is missing or not an admin key.
export function failed(what, err) {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    notify(`${what}: ${err.message}. Enter an admin API key above.`, { error: true });
    $('api-key').focus();
  } else {
    notify(`${what}: ${err.message}`, { error: true });
  }
}
