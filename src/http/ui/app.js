// messaging-server ops console. Plain ES module, no build step: it talks to the product's
// own JSON API (/api/stats, /api/dlq, /api/conversations, /api/messages/{key}) with the
// admin key the operator pastes, kept in sessionStorage (this tab only).
//
// Everything the API returns is written with textContent, never as HTML: message bodies
// and errors are other people's text.

import {
  $, ApiError, KEY_STORAGE, api, button, el, emptyRow, failed, list, notify, pageCount, shorten,
  showPage, state, when,
} from './core.js';
import { loadAddresses, loadAudit, wireSettings } from './settings.js';

const REFRESH_MS = 2000;
const HISTORY = 60; // samples on the chart: 2 minutes
const DLQ_PAGE_SIZE = 20;
const CONVERSATIONS_PAGE_SIZE = 10;
const MESSAGES_PAGE_SIZE = 50;
const FINAL = new Set(['sent', 'received', 'dead_lettered']);

// ---- overview: stats every 2 s, rates from successive samples -----------------------------

function setOutput(id, value, cls) {
  const out = $(id);
  out.textContent = value;
  out.classList.remove('ok', 'bad');
  if (cls) out.classList.add(cls);
}

function rate(now, before, field, seconds) {
  if (!before || seconds <= 0) return null;
  const delta = now.totals[field] - before.totals[field];
  // A counter that went down belongs to a restarted process: no rate for this sample.
  return delta >= 0 ? delta / seconds : null;
}

function showRate(id, value) {
  setOutput(id, value === null ? '–' : value.toFixed(1));
}

function renderStats(stats) {
  const before = state.previous;
  const seconds = before ? (Date.parse(stats.sampled_at) - Date.parse(before.sampled_at)) / 1000 : 0;
  setOutput('stat-ready', stats.ready ? 'ready' : 'not ready', stats.ready ? 'ok' : 'bad');
  setOutput('stat-depth', String(stats.queue_depth));
  // null while the database does not answer.
  setOutput('stat-dlq', stats.dlq_size ?? '–', stats.dlq_size > 0 ? 'bad' : null);
  setOutput('stat-workers', String(stats.workers_active));
  // Outbound messages stored and not yet sent or dead-lettered: due, retrying or in a call.
  setOutput('stat-unsent', stats.delivery_unsent ?? '–');
  // The circuit breaker of each provider's sender in this process ('–' without senders).
  for (const name of ['sms', 'email']) {
    const p = (stats.providers || []).find((x) => x.provider === name);
    const label = p ? `${p.circuit.replace('_', '-')}, ${p.in_flight} in flight` : '–';
    setOutput(`stat-circuit-${name}`, label, p && p.circuit !== 'closed' ? 'bad' : (p ? 'ok' : null));
  }
  const rates = {};
  for (const field of ['accepted', 'stored', 'sent', 'failed']) {
    rates[field] = rate(stats, before, field, seconds);
    showRate(`rate-${field}`, rates[field]);
  }
  const notReady = $('not-ready');
  notReady.hidden = stats.ready;
  notReady.textContent = stats.not_ready || '';
  $('sampled-at').textContent = `${stats.queue_backend} queue · sampled ${new Date(stats.sampled_at).toLocaleTimeString()}`;
  state.previous = stats;
  state.history.push({ depth: stats.queue_depth, sent: rates.sent || 0 });
  if (state.history.length > HISTORY) state.history.shift();
  drawChart();
}

function drawChart() {
  const points = (field) => {
    const values = state.history.map((h) => h[field]);
    const max = Math.max(1, ...values);
    const step = 600 / (HISTORY - 1);
    const offset = HISTORY - values.length;
    return values.map((v, i) => `${((offset + i) * step).toFixed(1)},${(78 - (v / max) * 74).toFixed(1)}`).join(' ');
  };
  $('depth-line').setAttribute('points', points('depth'));
  $('sent-line').setAttribute('points', points('sent'));
}

async function refreshStats() {
  clearTimeout(state.statsTimer);
  try {
    const stats = await api('/api/stats');
    renderStats(stats);
    state.ticks += 1;
    // The dead-letter list follows the count, and is re-read every few ticks anyway.
    if (stats.dlq_size !== state.lastDlqSize || state.ticks % 5 === 0) {
      state.lastDlqSize = stats.dlq_size;
      await loadDeadLetters();
    }
  } catch (err) {
    failed('Cannot read /api/stats', err);
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) return;
  }
  state.statsTimer = setTimeout(refreshStats, REFRESH_MS);
}

// ---- dead letters -----------------------------------------------------------------------

async function loadDeadLetters() {
  const tbody = $('dlq-table').tBodies[0];
  const page = await list(
    `/api/dlq?page=${state.dlqPage}&pageSize=${DLQ_PAGE_SIZE}`,
    'Cannot list dead letters',
  );
  if (!page) return;
  state.dlqTotal = page.meta.total;
  const pages = pageCount(page.meta.total, DLQ_PAGE_SIZE);
  if (state.dlqPage > pages) {
    state.dlqPage = pages;
    await loadDeadLetters();
    return;
  }
  showPage('dlq', state.dlqPage, pages, `${page.meta.total} in all`);
  $('replay-all').disabled = page.meta.total === 0;
  $('delete-all').disabled = page.meta.total === 0;
  if (page.items.length === 0) {
    emptyRow(tbody, 9, 'No dead letters.');
    return;
  }
  tbody.replaceChildren(...page.items.map(deadLetterRow));
}

function deadLetterRow(d) {
  const replay = button('Replay', () => replayOne(d), { ariaLabel: `Replay dead letter ${d.id}` });
  replay.disabled = Boolean(d.replayed_at);
  const remove = button('Delete', () => deleteOne(d), {
    className: 'small danger',
    ariaLabel: `Delete dead letter ${d.id}`,
  });
  const key = button(shorten(d.idempotency_key, 14), () => lookUp(d.idempotency_key), {
    className: 'link mono',
    ariaLabel: `Status of the message of dead letter ${d.id}`,
  });
  key.title = d.idempotency_key;
  return el('tr', { attrs: { 'data-id': String(d.id), 'data-key': d.idempotency_key } }, [
    el('td', { text: d.id, className: 'num' }),
    el('td', { text: shorten(d.last_error, 240), className: 'error', title: d.last_error }),
    el('td', { text: d.error_kind }),
    el('td', { text: d.attempts, className: 'num' }),
    el('td', { text: when(d.first_attempt_at) }),
    el('td', { text: when(d.dead_at) }),
    el('td', { text: d.replayed_at ? when(d.replayed_at) : '—' }),
    el('td', { className: 'key' }, [key]),
    el('td', { className: 'actions' }, [replay, remove]),
  ]);
}

async function replayOne(d) {
  try {
    await api(`/api/dlq/${d.id}/replay`, { method: 'POST' });
    // Follow the message first: by the time the notice says so, the lookup does.
    lookUp(d.idempotency_key);
    notify(`Dead letter ${d.id} replayed; following its message below.`);
    await loadDeadLetters();
    loadAudit();
  } catch (err) {
    failed(`Cannot replay dead letter ${d.id}`, err);
  }
}

async function deleteOne(d) {
  if (!window.confirm(`Delete dead letter ${d.id}? Its event cannot be replayed afterwards.`)) return;
  try {
    await api(`/api/dlq/${d.id}`, { method: 'DELETE' });
    notify(`Dead letter ${d.id} deleted.`);
    await loadDeadLetters();
    loadAudit();
  } catch (err) {
    failed(`Cannot delete dead letter ${d.id}`, err);
  }
}

async function replayAll() {
  if (!window.confirm('Replay every dead letter not replayed yet?')) return;
  try {
    const answer = await api('/api/dlq/replay', { method: 'POST' });
    notify(`${answer.replayed} dead letter(s) replayed.`);
    await loadDeadLetters();
    loadAudit();
  } catch (err) {
    failed('Cannot replay the dead letters', err);
  }
}

async function deleteAll() {
  if (!window.confirm(`Delete all ${state.dlqTotal} dead letters? They cannot be replayed afterwards.`)) return;
  try {
    const answer = await api('/api/dlq', { method: 'DELETE' });
    notify(`${answer.deleted} dead letter(s) deleted.`);
    state.dlqPage = 1;
    await loadDeadLetters();
    loadAudit();
  } catch (err) {
    failed('Cannot delete the dead letters', err);
  }
}

// ---- status lookup ----------------------------------------------------------------------

function lookUp(key) {
  $('lookup-key').value = key;
  $('lookup-title').scrollIntoView({ behavior: 'smooth', block: 'start' });
  runLookup(key);
}

async function runLookup(key) {
  clearTimeout(state.lookupTimer);
  const result = $('lookup-result');
  let status;
  try {
    status = await api(`/api/messages/${encodeURIComponent(key)}`);
  } catch (err) {
    const text = err instanceof ApiError && err.status === 404
      ? 'No message with this idempotency key (or not one this API key may see).'
      : `Cannot look it up: ${err.message}`;
    result.replaceChildren(el('dt', { text: 'status' }), el('dd', { text, className: 'error' }));
    return;
  }
  const pill = el('span', { text: status.status, className: `status-pill status-${status.status}` });
  const rows = [
    ['status', pill],
    ['attempts', status.attempts],
    ['last error', status.last_error ?? '—'],
    ['message id', status.message_id ?? '—'],
    ['conversation id', status.conversation_id ?? '—'],
    ['provider message id', status.provider_message_id ?? '—'],
    ['updated', when(status.updated_at)],
  ];
  result.replaceChildren(
    ...rows.flatMap(([name, value]) => [
      el('dt', { text: name }),
      value instanceof Node ? el('dd', {}, [value]) : el('dd', { text: value }),
    ]),
  );
  result.dataset.status = status.status;
  // Still moving: look again until it is final (the key field still shows this key).
  if (!FINAL.has(status.status)) {
    state.lookupTimer = setTimeout(() => {
      if ($('lookup-key').value.trim() === key) runLookup(key);
    }, 1000);
  }
}

// ---- conversations ----------------------------------------------------------------------

async function loadConversations() {
  const tbody = $('conversations-table').tBodies[0];
  const page = await list(
    `/api/conversations?page=${state.conversationsPage}&pageSize=${CONVERSATIONS_PAGE_SIZE}`,
    'Cannot list conversations',
  );
  if (!page) return;
  state.conversationsTotal = page.meta.total;
  const pages = pageCount(page.meta.total, CONVERSATIONS_PAGE_SIZE);
  showPage('conversations', state.conversationsPage, pages, `${page.meta.total} in all`);
  if (page.items.length === 0) {
    emptyRow(tbody, 5, 'No conversations yet.');
    return;
  }
  tbody.replaceChildren(
    ...page.items.map((c) => {
      const open = button(`#${c.id}`, () => loadMessages(c), {
        className: 'link',
        ariaLabel: `Open conversation ${c.id}`,
      });
      const row = el('tr', { className: state.conversation === c.id ? 'selected' : '' }, [
        el('td', {}, [open]),
        el('td', { text: c.channel }),
        el('td', { text: c.participants.join(' ↔ ') }),
        el('td', { text: c.message_count, className: 'num' }),
        el('td', { text: when(c.last_message_at) }),
      ]);
      return row;
    }),
  );
}

async function loadMessages(conversation) {
  state.conversation = conversation.id;
  const tbody = $('messages-table').tBodies[0];
  $('messages-title').textContent = `Messages of conversation #${conversation.id}`;
  try {
    // The newest page: messages are listed oldest first.
    const first = await api(`/api/conversations/${conversation.id}/messages?page=1&pageSize=${MESSAGES_PAGE_SIZE}`);
    const last = pageCount(first.meta.total, MESSAGES_PAGE_SIZE);
    const page = last === 1
      ? first
      : await api(`/api/conversations/${conversation.id}/messages?page=${last}&pageSize=${MESSAGES_PAGE_SIZE}`);
    $('messages-hint').textContent = `${page.meta.total} message(s); the latest ${page.items.length} shown.`;
    tbody.replaceChildren(
      ...page.items.map((m) => {
        const key = button(shorten(m.idempotency_key, 10), () => lookUp(m.idempotency_key), {
          className: 'link mono',
          ariaLabel: `Status of message ${m.id}`,
        });
        key.title = m.idempotency_key;
        return el('tr', {}, [
          el('td', { text: when(m.sent_at) }),
          el('td', { text: `${m.direction} ${m.channel}` }),
          el('td', { text: `${m.from} → ${m.to}` }),
          el('td', { text: shorten(m.subject ? `${m.subject}: ${m.body}` : m.body, 120), title: m.body }),
          el('td', { text: m.status }),
          el('td', { className: 'key' }, [key]),
        ]);
      }),
    );
    await loadConversations();
  } catch (err) {
    failed(`Cannot read conversation ${conversation.id}`, err);
  }
}

// ---- webhook endpoints ------------------------------------------------------------------

async function loadWebhooks() {
  const tbody = $('webhooks-table').tBodies[0];
  const page = await list('/api/webhook-endpoints?pageSize=200', 'Cannot list webhook endpoints');
  if (!page) return;
  if (page.items.length === 0) {
    emptyRow(tbody, 6, 'No webhook endpoints.');
    return;
  }
  // The latest attempt of each endpoint that is failing or disabled: why it fails.
  const failures = await Promise.all(page.items.map(async (e) => {
    if (e.enabled && !e.failing_since) return null;
    try {
      const attempts = await api(`/api/webhook-endpoints/${e.id}/attempts?pageSize=1`);
      return attempts.items[0] ?? null;
    } catch {
      return null;
    }
  }));
  tbody.replaceChildren(...page.items.map((e, i) => webhookRow(e, failures[i])));
}

function webhookRow(e, failure) {
  let stateText = 'ok';
  if (!e.enabled) stateText = `disabled${e.disabled_reason ? `: ${e.disabled_reason}` : ''}`;
  else if (e.failing_since) stateText = `failing since ${when(e.failing_since)}`;
  const why = failure
    ? `${when(failure.attempted_at)} · ${failure.status_code ?? 'no answer'} · ${failure.error ?? ''}`
    : '–';
  const replay = button('Replay failed', () => replayWebhooks(e), {
    ariaLabel: `Replay failed deliveries of ${e.url}`,
  });
  return el('tr', { attrs: { 'data-id': e.id, 'data-state': e.enabled ? (e.failing_since ? 'failing' : 'ok') : 'disabled' } }, [
    el('td', { text: shorten(e.url, 60), title: e.url, className: 'mono' }),
    el('td', { text: shorten(e.customer_id, 8), title: e.customer_id, className: 'mono' }),
    el('td', { text: e.events.length ? e.events.join(', ') : 'all' }),
    el('td', { text: stateText }),
    el('td', { text: shorten(why, 120), title: why }),
    el('td', {}, [replay]),
  ]);
}

async function replayWebhooks(e) {
  try {
    const answer = await api(`/api/webhook-endpoints/${e.id}/replay`, { method: 'POST' });
    notify(`${answer.replayed} failed deliveries to ${e.url} are due again.`);
  } catch (err) {
    failed(`Cannot replay the deliveries to ${e.url}`, err);
  }
  loadWebhooks();
  loadAudit();
}

// ---- key handling and start-up ----------------------------------------------------------

function showKeyState() {
  $('forget-key').hidden = !state.key;
  $('api-key').value = '';
  $('api-key').placeholder = state.key ? `${state.key.slice(0, 12)}… (in use)` : 'msk_…';
}

async function start() {
  showKeyState();
  state.previous = null;
  state.history = [];
  state.lastDlqSize = null;
  try {
    await api('/api/stats');
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      notify('This server needs an API key: paste an admin key above.');
      $('api-key').focus();
      return;
    }
    failed('Cannot reach the server', err);
    return;
  }
  notify(state.key ? 'Connected.' : 'Connected without a key: authentication is off on this server (auth.required = false).');
  refreshStats();
  loadConversations();
  loadWebhooks();
  loadAddresses();
  loadAudit();
}

function wire() {
  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('api-key').value.trim();
    if (!key) return;
    state.key = key;
    sessionStorage.setItem(KEY_STORAGE, key);
    start();
  });
  $('forget-key').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = '';
    clearTimeout(state.statsTimer);
    showKeyState();
    notify('Key forgotten.');
  });
  $('replay-all').addEventListener('click', replayAll);
  $('delete-all').addEventListener('click', deleteAll);
  $('dlq-prev').addEventListener('click', () => { state.dlqPage -= 1; loadDeadLetters(); });
  $('dlq-next').addEventListener('click', () => { state.dlqPage += 1; loadDeadLetters(); });
  $('conversations-refresh').addEventListener('click', loadConversations);
  $('webhooks-refresh').addEventListener('click', loadWebhooks);
  $('conversations-prev').addEventListener('click', () => { state.conversationsPage -= 1; loadConversations(); });
  $('conversations-next').addEventListener('click', () => { state.conversationsPage += 1; loadConversations(); });
  wireSettings();
  $('lookup-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('lookup-key').value.trim().toLowerCase();
    $('lookup-key').value = key;
    runLookup(key);
  });
}

wire();
start();
