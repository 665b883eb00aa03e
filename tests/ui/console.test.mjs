// Browser test of the ops console, run by tests/it/ui.rs (cargo test) against a real server
// process whose SMS provider is a stub over HTTP that refuses (400) until told otherwise.
//
// Env: CONSOLE_URL (the server), ADMIN_KEY, PROVIDER_CONTROL_URL (the stub's switch),
// SCREENSHOT (where to save the picture), CHROMIUM (default /usr/bin/chromium).
//
// It loads /ui/, enters the key, sees the queue depth and rates move under load it sends,
// deletes one dead letter and replays another with the buttons once the provider is fixed,
// and sees the replayed message delivered (status `sent`). Any error in the page (a CSP
// violation included) fails it.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const base = env('CONSOLE_URL');
const adminKey = env('ADMIN_KEY');
const control = env('PROVIDER_CONTROL_URL');
const screenshot = env('SCREENSHOT');
const executablePath = env('CHROMIUM', '/usr/bin/chromium');

const step = (text) => console.log(`- ${text}`);

/** Polls `check` until it returns a truthy value (returned) or `ms` passes. */
async function until(what, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function sendLoad(count) {
  const send = async (i) => {
    const response = await fetch(`${base}/api/messages/sms`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${adminKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({
        from: '+12016661234',
        to: `+1804555${String(i % 10).padStart(4, '0')}`,
        type: 'sms',
        body: `load message ${i}`,
        attachments: null,
      }),
    });
    if (response.status !== 202) throw new Error(`load message ${i}: HTTP ${response.status}`);
  };
  for (let i = 0; i < count; i += 20) {
    await Promise.all(Array.from({ length: Math.min(20, count - i) }, (_, j) => send(i + j)));
  }
}

const profile = mkdtempSync(join(tmpdir(), 'ms-console-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run',
  ],
  viewport: { width: 1360, height: 1000 },
});
const page = context.pages()[0] ?? (await context.newPage());
const pageErrors = [];
page.on('pageerror', (err) => pageErrors.push(`page error: ${err.message}`));
// The page's first call goes without a key (to learn whether the server needs one): its 401
// is the one error expected, before a key is entered.
let keyEntered = false;
page.on('console', (message) => {
  const expected = !keyEntered && message.text().includes('status of 401');
  if (message.type() === 'error' && !expected) pageErrors.push(`console error: ${message.text()}`);
});

const number = async (id) => Number(await page.locator(`#${id}`).textContent());

try {
  step('the console loads and asks for a key');
  const response = await page.goto(`${base}/ui/`);
  if (!response.ok()) throw new Error(`/ui/ answered ${response.status()}`);
  const csp = response.headers()['content-security-policy'] ?? '';
  if (!csp.includes("default-src 'self'")) throw new Error(`no strict CSP on /ui/: ${csp}`);
  await until('the key prompt', async () => (await page.locator('#notice').textContent()).includes('API key'));

  step('the admin key is entered with the keyboard');
  keyEntered = true;
  await page.getByLabel('Admin API key').fill(adminKey);
  await page.getByLabel('Admin API key').press('Enter');
  await until('readiness', async () => (await page.locator('#stat-ready').textContent()) === 'ready');

  step('the dead letters of the refusing provider are listed');
  const rows = page.locator('#dlq-table tbody tr[data-id]');
  await until('3 dead letters', async () => (await rows.count()) >= 3);
  const dlqBefore = await number('stat-dlq');
  const ids = await rows.evaluateAll((trs) => trs.map((tr) => [tr.dataset.id, tr.dataset.key]));
  const [replayId, replayKey] = ids[0];
  const [deleteId] = ids[1];

  step('the failing webhook endpoint is listed with its latest failure');
  const failing = page.locator('#webhooks-table tbody tr[data-state="failing"]');
  await until('a failing endpoint', async () => {
    await page.getByRole('button', { name: 'Refresh webhook endpoints' }).click();
    return (await failing.count()) === 1 && (await failing.textContent()).includes('no answer');
  });

  step('a dead letter is deleted with its button (confirmed)');
  page.once('dialog', (dialog) => dialog.accept());
  await page.getByRole('button', { name: `Delete dead letter ${deleteId}` }).click();
  await until('the deleted row to go', async () => (await page.locator(`#dlq-table tr[data-id="${deleteId}"]`).count()) === 0);
  await until('the dead-letter count to drop', async () => (await number('stat-dlq')) === dlqBefore - 1);

  step('the deletion is in the audit log, under the key that did it');
  const deleted = page.locator('#audit-table tbody tr[data-action="dead_letter.delete"]');
  await until('an audit entry for the deletion', async () => (await deleted.count()) === 1);
  const entry = await deleted.textContent();
  if (!entry.includes(`dead_letter:${deleteId}`) || !entry.includes(`key:${adminKey.slice(0, 12)}`)) {
    throw new Error(`the audit entry does not say what and who: ${entry}`);
  }

  step('an address is owned with the form, listed, and audited');
  await page.getByLabel('Phone number or email domain').fill('+14155550177');
  await page.getByRole('button', { name: 'Own address', exact: true }).click();
  await until('the address listed', async () => (await page.locator('#addresses-table tbody').textContent()).includes('+14155550177'));
  await until('its audit entry', async () => (await page.locator('#audit-table tbody tr[data-action="address.add"]').count()) === 1);

  step('the provider is fixed (accepts after 1.5 s) and load is sent');
  const fixed = await fetch(control, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ status: 200, delay_ms: 1500 }),
  });
  if (fixed.status !== 204) throw new Error(`provider control answered ${fixed.status}`);
  const load = sendLoad(120);

  step('the work in hand and the rates move');
  // Ingest ends at the commit: what waits is mostly the messages waiting to be sent (the
  // provider takes 1.5 s), sometimes events still in the queue.
  let maxDepth = 0;
  await until('messages waiting (queued or to send)', async () => {
    maxDepth = Math.max(maxDepth, (await number('stat-depth')) + (await number('stat-unsent')));
    return maxDepth > 0;
  });
  await until('an accepted rate above 0', async () => (await number('rate-accepted')) > 0);
  await until('a stored rate above 0', async () => (await number('rate-stored')) > 0);
  await until('a sent rate above 0', async () => (await number('rate-sent')) > 0);
  await load;

  step(`dead letter ${replayId} is replayed with its button and delivered`);
  await page.getByRole('button', { name: `Replay dead letter ${replayId}` }).click();
  await until('the replay notice', async () => (await page.locator('#notice').textContent()).includes(`Dead letter ${replayId} replayed`));
  await until('the lookup to follow the replayed message', async () => (await page.locator('#lookup-key').inputValue()) === replayKey);
  await until('the replayed message to be sent', async () => (await page.locator('#lookup-result').getAttribute('data-status')) === 'sent', 60_000);
  if (!(await page.getByRole('button', { name: `Replay dead letter ${replayId}` }).isDisabled())) {
    throw new Error('a replayed dead letter can still be replayed');
  }

  step('the queue drains and a conversation opens');
  await until('an empty queue', async () => (await number('stat-depth')) === 0, 60_000);
  await until('nothing waiting to send', async () => (await number('stat-unsent')) === 0, 60_000);
  await page.getByRole('button', { name: 'Refresh', exact: true }).click();
  const open = page.getByRole('button', { name: /^Open conversation / }).first();
  await open.click();
  await until('its messages', async () => (await page.locator('#messages-table tbody tr').count()) > 0);
  await page.locator('#lookup-key').fill(replayKey);
  await page.getByRole('button', { name: 'Look up' }).click();
  await until('the lookup to show it', async () => (await page.locator('#lookup-result').getAttribute('data-status')) === 'sent');
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: screenshot, fullPage: true });

  if (pageErrors.length > 0) throw new Error(pageErrors.join('\n'));
  console.log(`most work in hand seen ${maxDepth}`);
  console.log(`replayed ${replayKey}`);
  console.log('console test passed');
} catch (err) {
  const failure = screenshot.replace(/\.png$/, '') + '-failure.png';
  await page.screenshot({ path: failure, fullPage: true }).catch(() => {});
  console.error(`console test FAILED: ${err.stack || err}`);
  if (pageErrors.length > 0) console.error(pageErrors.join('\n'));
  console.error(`page at failure: ${failure}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
