// ferry serve's upload page in a real headless browser: Debian's Chromium driven by
// playwright-core (never a downloaded browser). One scenario per run:
//
//   node page.mjs SCENARIO
//
// Environment: FERRY_URL (the server, no trailing slash), FERRY_TOKEN (the signed-in user's
// token), FERRY_SRC (a directory with the files the scenario chooses), FERRY_CHROMIUM (default
// /usr/bin/chromium), FERRY_SHOT (scenario `screenshot`: where to write the PNG).
// The scenario prints one JSON line with what it saw, for the Rust test to check against the
// server's disk and counters, and exits non-zero (with a message) when the page misbehaved.
// Nothing waits by sleeping: every wait is on an event or a condition, with a deadline.

import { chromium } from 'playwright-core';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const BASE = process.env.FERRY_URL;
const TOKEN = process.env.FERRY_TOKEN;
const SRC = process.env.FERRY_SRC;
const DEADLINE = 30_000;

async function launch() {
  const profile = await mkdtemp(join(tmpdir(), 'ferry-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.FERRY_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: 1000, height: 800 },
  });
  context.setDefaultTimeout(DEADLINE);
  const errors = [];
  context.on('weberror', (e) => errors.push(String(e.error())));
  return {
    context,
    errors,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

// A page signed in through a ?token= link, with the live stream connected.
async function open(context, query = '') {
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.error(`page console: ${m.text()}`); });
  await page.goto(`${BASE}/?token=${encodeURIComponent(TOKEN)}${query}`);
  await page.waitForSelector('#live[data-live="yes"]');
  assert.ok(!page.url().includes('token='), `the token stays out of the address bar: ${page.url()}`);
  return page;
}

const item = (page, path) => page.locator(`#queue li[data-path="${path}"]`);
async function waitState(page, path, state) {
  await page.waitForSelector(`#queue li[data-path="${path}"][data-state="${state}"]`);
}
async function note(page, path) {
  return (await item(page, path).locator('.note').textContent()).trim();
}

// PATCH requests the page sends: their Upload-Offset and body length (what went on the wire).
function watchPatches(page) {
  const seen = [];
  page.on('request', (r) => {
    if (r.method() === 'PATCH') {
      seen.push({ offset: Number(r.headers()['upload-offset']), bytes: (r.postDataBuffer() || Buffer.alloc(0)).length });
    }
  });
  return seen;
}

// Holds the n-th PATCH (1-based) until release() is called; `held` resolves when it arrives.
async function holdPatch(page, n) {
  let count = 0;
  let release;
  const released = new Promise((r) => { release = r; });
  let arrived;
  const held = new Promise((r) => { arrived = r; });
  await page.route('**/uploads/*', async (route) => {
    if (route.request().method() !== 'PATCH') return route.continue();
    count += 1;
    if (count === n) {
      arrived(route.request());
      await released;
      return route.continue().catch(() => {});
    }
    return route.continue();
  });
  return { held, release: () => release() };
}

const scenarios = {
  // The sign-in form, then an upload whose progress is visible while it runs.
  async progress({ context }) {
    const page = await context.newPage();
    await page.goto(`${BASE}/`);
    await page.fill('#token', TOKEN);
    await Promise.all([page.waitForURL((u) => !u.search.includes('token')), page.click('button[type=submit]')]);
    await page.waitForSelector('#live[data-live="yes"]');
    await page.goto(`${BASE}/?chunk=524288`);
    await page.waitForSelector('#live[data-live="yes"]');
    const hold = await holdPatch(page, 4);
    await page.setInputFiles('#pick-files', join(SRC, 'progress.bin'));
    await hold.held;
    const bar = item(page, 'progress.bin').locator('progress');
    const shown = await bar.evaluate((b) => ({ value: b.value, max: b.max }));
    const stats = (await item(page, 'progress.bin').locator('.stats').textContent()).trim();
    assert.equal(shown.value, 3 * 524288, `three chunks shown while the fourth is on its way`);
    assert.ok(shown.value > 0 && shown.value < shown.max, `progress between 0 and the size: ${JSON.stringify(shown)}`);
    assert.match(stats, /1\.5 MiB of 6\.0 MiB \(25%\)/);
    hold.release();
    await waitState(page, 'progress.bin', 'done');
    const done = await bar.evaluate((b) => ({ value: b.value, max: b.max }));
    assert.equal(done.value, done.max);
    await page.waitForSelector('#listing a[href="/files/progress.bin"]');
    return { midway: shown, stats };
  },

  // A reload half-way; the same file chosen again continues from the server's offset.
  async resume({ context }) {
    const chunk = 262144;
    let page = await open(context, `&chunk=${chunk}`);
    const first = watchPatches(page);
    const hold = await holdPatch(page, 6);
    await page.setInputFiles('#pick-files', join(SRC, 'resume.bin'));
    await hold.held;
    const remembered = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('ferry.upload.')));
    assert.equal(remembered.length, 1, 'the fingerprint is kept in localStorage');
    await page.reload(); // the sixth PATCH never reaches the server
    await page.waitForSelector('#live[data-live="yes"]');
    // The server's stream lists the unfinished upload until this page takes it over.
    const offered = await page.waitForSelector('#elsewhere li[data-path="resume.bin"][data-state="unfinished"]');
    assert.equal(await offered.getAttribute('data-offset'), String(5 * chunk));
    const second = watchPatches(page);
    await page.setInputFiles('#pick-files', join(SRC, 'resume.bin'));
    await waitState(page, 'resume.bin', 'done');
    assert.equal(await page.locator('#elsewhere li').count(), 0, 'taken over, no longer elsewhere');
    const message = await note(page, 'resume.bin');
    assert.match(message, /resumed at 1\.3 MiB/, message);
    assert.equal(second[0].offset, 5 * chunk, `the second page starts at the server's offset: ${JSON.stringify(second)}`);
    const left = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('ferry.upload.')).length);
    assert.equal(left, 0, 'a finished upload is forgotten');
    return {
      first: first.map((p) => p.offset),
      second: second.map((p) => p.offset),
      second_bytes: second.reduce((s, p) => s + p.bytes, 0),
    };
  },

  // A browser restart with nothing remembered (another profile, another device): the server's
  // pre-upload check finds the unfinished upload of the same file and it resumes.
  async restart({ context, close }) {
    const chunk = 262144;
    const page = await open(context, `&chunk=${chunk}`);
    const hold = await holdPatch(page, 4);
    await page.setInputFiles('#pick-files', join(SRC, 'restart.bin'));
    await hold.held;
    await close();
    const again = await launch();
    try {
      const fresh = await open(again.context, `&chunk=${chunk}`);
      const remembered = await fresh.evaluate(() => localStorage.length);
      assert.equal(remembered, 0, 'a fresh profile remembers nothing');
      const patches = watchPatches(fresh);
      await fresh.setInputFiles('#pick-files', join(SRC, 'restart.bin'));
      await waitState(fresh, 'restart.bin', 'done');
      assert.deepEqual(again.errors, []);
      return { offsets: patches.map((p) => p.offset) };
    } finally {
      await again.close();
    }
  },

  // An existing file: replacing it declined (kept), then accepted (replaced).
  async replace({ context }) {
    const page = await open(context);
    const asked = [];
    page.once('dialog', (d) => { asked.push(d.message()); d.dismiss(); });
    await page.setInputFiles('#pick-files', join(SRC, 'exists.txt'));
    await waitState(page, 'exists.txt', 'skipped');
    const declined = await note(page, 'exists.txt');
    const kept = await page.evaluate(() => fetch('/files/exists.txt', { cache: 'no-store' }).then((r) => r.text()));
    page.once('dialog', (d) => { asked.push(d.message()); d.accept(); });
    await page.setInputFiles('#pick-files', join(SRC, 'exists.txt'));
    await page.waitForSelector('#queue li[data-path="exists.txt"][data-state="done"]');
    assert.equal(asked.length, 2);
    assert.match(asked[0], /exists\.txt already exists on the server\. Replace it\?/);
    return { asked, declined, kept };
  },

  // Another user's file and another user's unfinished upload: reported, nothing sent.
  async others({ context }) {
    const page = await open(context);
    const patches = watchPatches(page);
    const posts = [];
    page.on('request', (r) => { if (r.method() === 'POST') posts.push(r.url()); });
    page.on('dialog', (d) => { throw new Error(`no question expected: ${d.message()}`); });
    await page.setInputFiles('#pick-files', [join(SRC, 'bobs.txt'), join(SRC, 'busy.bin')]);
    await waitState(page, 'bobs.txt', 'error');
    await waitState(page, 'busy.bin', 'error');
    const notes = { 'bobs.txt': await note(page, 'bobs.txt'), 'busy.bin': await note(page, 'busy.bin') };
    assert.match(notes['bobs.txt'], /belongs to another user/);
    assert.match(notes['busy.bin'], /Someone else is uploading/);
    assert.equal(patches.length + posts.length, 0, 'nothing was uploaded');
    return { notes };
  },

  // A whole folder: relative paths kept.
  async folder({ context }) {
    const page = await open(context);
    await page.setInputFiles('#pick-folder', join(SRC, 'album'));
    const paths = await page.$$eval('#queue li', (lis) => lis.map((l) => l.dataset.path).sort());
    for (const p of paths) await waitState(page, p, 'done');
    await page.waitForSelector('#listing a[href="/files/album/"]');
    // A file dropped on the drop zone (a folder cannot be dropped by a script).
    const dt = await page.evaluateHandle(() => {
      const t = new DataTransfer();
      t.items.add(new File(['dropped on the page\n'], 'dropped.txt', { type: 'text/plain' }));
      return t;
    });
    await page.dispatchEvent('#drop', 'drop', { dataTransfer: dt });
    await waitState(page, 'dropped.txt', 'done');
    return { paths };
  },

  // Progress pushed by the server: a second page sees the first page's upload and its landing.
  async push({ context }) {
    const chunk = 262144;
    const watcher = await open(context);
    const uploader = await open(context, `&chunk=${chunk}`);
    const hold = await holdPatch(uploader, 4);
    await uploader.setInputFiles('#pick-files', join(SRC, 'pushed.bin'));
    await hold.held;
    const seen = await watcher.waitForSelector(`#elsewhere li[data-path="pushed.bin"][data-offset="${3 * chunk}"]`);
    const midway = await seen.evaluate((li) => ({ offset: Number(li.dataset.offset), stats: li.querySelector('.stats').textContent }));
    assert.equal(await watcher.isVisible('#elsewhere-section'), true);
    hold.release();
    await watcher.waitForSelector('#elsewhere li[data-path="pushed.bin"][data-state="done"]');
    await watcher.waitForSelector('#listing a[href="/files/pushed.bin"]');
    await waitState(uploader, 'pushed.bin', 'done');
    assert.equal(await uploader.locator('#elsewhere li').count(), 0, 'the uploading page does not list its own upload as elsewhere');
    return { midway };
  },

  // The keyboard, a dropped connection (retried), pause and resume, cancel, a phone's width.
  async controls({ context }) {
    const page = await open(context, '&chunk=262144');
    await page.keyboard.press('Tab');
    const first = await page.evaluate(() => document.activeElement.id);
    await page.keyboard.press('Tab');
    const second = await page.evaluate(() => document.activeElement.id);
    assert.deepEqual([first, second], ['pick-files', 'pick-folder'], 'the pickers are reached by keyboard');

    // One plan for every PATCH: per file, the n-th PATCH is cut, or held until released.
    const counts = {};
    const plan = {};
    await page.route('**/uploads/*', async (route) => {
      const req = route.request();
      if (req.method() !== 'PATCH') return route.continue();
      const file = await page.evaluate((url) => {
        const li = [...document.querySelectorAll('#queue li')].find((l) => l.dataset.url === new URL(url).pathname);
        return li ? li.dataset.path : null;
      }, req.url());
      counts[file] = (counts[file] || 0) + 1;
      const step = plan[file] && plan[file][counts[file]];
      if (step === 'cut') return route.abort('connectionreset');
      if (step && step.hold) {
        step.arrived();
        await step.released;
        return route.continue().catch(() => {});
      }
      return route.continue();
    });
    const hold = () => {
      const h = {};
      h.here = new Promise((r) => { h.arrived = r; });
      h.released = new Promise((r) => { h.release = r; });
      h.hold = true;
      return h;
    };

    plan['dropped.bin'] = { 3: 'cut' };
    await page.setInputFiles('#pick-files', join(SRC, 'dropped.bin'));
    await waitState(page, 'dropped.bin', 'done');

    const paused = hold();
    plan['paused.bin'] = { 3: paused };
    await page.setInputFiles('#pick-files', join(SRC, 'paused.bin'));
    await paused.here;
    await item(page, 'paused.bin').locator('button[data-action="pause"]').click();
    await waitState(page, 'paused.bin', 'paused');
    paused.release();
    assert.equal(await item(page, 'paused.bin').locator('button[data-action="pause"]').isVisible(), false);
    await item(page, 'paused.bin').locator('button[data-action="resume"]').click();
    await waitState(page, 'paused.bin', 'done');

    const cancelled = hold();
    plan['cancelled.bin'] = { 2: cancelled };
    await page.setInputFiles('#pick-files', join(SRC, 'cancelled.bin'));
    await cancelled.here;
    const deleted = page.waitForResponse((r) => r.request().method() === 'DELETE');
    await item(page, 'cancelled.bin').locator('button[data-action="cancel"]').click();
    assert.equal((await deleted).status(), 204);
    cancelled.release();
    await waitState(page, 'cancelled.bin', 'cancelled');
    const remembered = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('ferry.upload.')).length);
    assert.equal(remembered, 0);

    await page.setViewportSize({ width: 360, height: 740 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no sideways scrolling on a phone (${overflow} px too wide)`);
    return { counts };
  },

  // The screenshot for the README: a finished upload, one paused half-way, and the listing.
  async screenshot({ context }) {
    const page = await open(context, '&chunk=262144');
    await page.setViewportSize({ width: 900, height: 760 });
    await page.setInputFiles('#pick-files', join(SRC, 'report.pdf'));
    await waitState(page, 'report.pdf', 'done');
    const hold = await holdPatch(page, 5);
    await page.setInputFiles('#pick-files', join(SRC, 'holiday.mp4'));
    await hold.held;
    await item(page, 'holiday.mp4').locator('button[data-action="pause"]').click();
    await waitState(page, 'holiday.mp4', 'paused');
    hold.release();
    await page.screenshot({ path: process.env.FERRY_SHOT, fullPage: true });
    return { shot: process.env.FERRY_SHOT };
  },
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`usage: node page.mjs ${Object.keys(scenarios).join('|')}`);
  process.exit(2);
}
const browser = await launch();
let code = 0;
try {
  const result = await scenarios[name](browser);
  assert.deepEqual(browser.errors, [], 'no script errors on the page');
  console.log(JSON.stringify(result));
} catch (e) {
  console.error(`scenario ${name} failed: ${e.stack || e}`);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
