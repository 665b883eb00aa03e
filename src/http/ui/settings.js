// The console's settings panels: the addresses customers own (inbound messages to them are
// theirs) and the audit log of who changed what.

import {
  $, api, button, el, emptyRow, failed, list, notify, pageCount, shorten, showPage, state, when,
} from './core.js';

const AUDIT_PAGE_SIZE = 20;

// ---- owned addresses --------------------------------------------------------------------

export async function loadAddresses() {
  const tbody = $('addresses-table').tBodies[0];
  const page = await list('/api/addresses?pageSize=200', 'Cannot list addresses');
  if (!page) return;
  if (page.items.length === 0) {
    emptyRow(tbody, 5, 'No owned addresses: inbound messages are stored for nobody.');
    return;
  }
  tbody.replaceChildren(...page.items.map(addressRow));
}

function addressRow(a) {
  const remove = button('Give up', () => removeAddress(a), {
    className: 'small danger',
    ariaLabel: `Give up ${a.address}`,
  });
  return el('tr', { attrs: { 'data-id': String(a.id) } }, [
    el('td', { text: a.address, className: 'mono' }),
    el('td', { text: a.kind === 'phone' ? 'phone number' : 'email domain' }),
    el('td', { text: shorten(a.customer_id, 8), title: a.customer_id, className: 'mono' }),
    el('td', { text: when(a.created_at) }),
    el('td', {}, [remove]),
  ]);
}

async function addAddress(event) {
  event.preventDefault();
  const address = $('address-input').value.trim();
  const customer = $('address-customer').value.trim();
  if (!address) return;
  const body = customer ? { address, customer_id: customer } : { address };
  try {
    await api('/api/addresses', { method: 'POST', body });
    notify(`${address} is owned; inbound messages to it are its owner's.`);
    $('address-input').value = '';
  } catch (err) {
    failed(`Cannot own ${address}`, err);
  }
  loadAddresses();
  loadAudit();
}

async function removeAddress(a) {
  if (!window.confirm(`Give up ${a.address}? Inbound messages to it will be stored for nobody.`)) return;
  try {
    await api(`/api/addresses/${a.id}`, { method: 'DELETE' });
    notify(`${a.address} given up.`);
  } catch (err) {
    failed(`Cannot give up ${a.address}`, err);
  }
  loadAddresses();
  loadAudit();
}

// ---- audit log --------------------------------------------------------------------------

export async function loadAudit() {
  const tbody = $('audit-table').tBodies[0];
  const action = $('audit-action').value;
  const query = new URLSearchParams({ page: String(state.auditPage), pageSize: String(AUDIT_PAGE_SIZE) });
  if (action) query.set('action', action);
  const page = await list(`/api/audit?${query}`, 'Cannot read the audit log');
  if (!page) return;
  const pages = pageCount(page.meta.total, AUDIT_PAGE_SIZE);
  showPage('audit', state.auditPage, pages, `${page.meta.total} entries`);
  if (page.items.length === 0) {
    emptyRow(tbody, 6, action ? `No ${action} entries.` : 'Nothing changed yet.');
    return;
  }
  tbody.replaceChildren(...page.items.map((e) => el('tr', { attrs: { 'data-action': e.action } }, [
    el('td', { text: when(e.at) }),
    el('td', { text: e.actor, className: 'mono' }),
    el('td', { text: e.action }),
    el('td', { text: shorten(e.target, 48), title: e.target, className: 'mono' }),
    el('td', { text: shorten(e.detail ?? '', 80), title: e.detail ?? '' }),
    el('td', { text: shorten(e.request_id ?? '–', 16), title: e.request_id ?? '', className: 'mono' }),
  ])));
}

export function wireSettings() {
  $('address-form').addEventListener('submit', addAddress);
  $('addresses-refresh').addEventListener('click', loadAddresses);
  $('audit-action').addEventListener('change', () => { state.auditPage = 1; loadAudit(); });
  $('audit-refresh').addEventListener('click', loadAudit);
  $('audit-prev').addEventListener('click', () => { state.auditPage -= 1; loadAudit(); });
  $('audit-next').addEventListener('click', () => { state.auditPage += 1; loadAudit(); });
}
