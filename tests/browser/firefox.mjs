// ferry serve's upload page in Debian's Firefox (firefox-esr), headless, driven by geckodriver
// over WebDriver: classic WebDriver (plain HTTP) to navigate, choose files and read the page,
// WebDriver BiDi (geckodriver's WebSocket) to see console errors and every request, and to hold
// a PATCH back (network interception) so a scenario can look at the page half-way. No
// dependency beyond Node (>= 20.10 with --experimental-websocket, or >= 22); never a download.
//
//   node --experimental-websocket firefox.mjs SCENARIO
//
// Environment: FERRY_URL (the server, no trailing slash), FERRY_TOKEN (the signed-in user's
// token), FERRY_SRC (a directory with the files the scenario chooses), FERRY_GECKODRIVER (the
// geckodriver binary), FERRY_FIREFOX (default /usr/bin/firefox-esr).
// The scenario prints one JSON line with what it saw, for the Rust test to check against the
// server's disk and counters, and exits non-zero (with a message) when the page misbehaved.
// Nothing waits by sleeping: every wait is on an event or a condition, with a deadline.

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const BASE = process.env.FERRY_URL;
const TOKEN = process.env.FERRY_TOKEN;
const SRC = process.env.FERRY_SRC;
const DEADLINE = 30_000;
const ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';

// A promise that rejects after the deadline, saying what was awaited.
function within(promise, what, ms = DEADLINE) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

// A free TCP port on the loopback (for geckodriver and its BiDi WebSocket).
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// geckodriver on a free port, ready to take a session.
async function startDriver() {
  const port = await freePort();
  const wsPort = await freePort();
  const bin = process.env.FERRY_GECKODRIVER;
  assert.ok(bin, 'FERRY_GECKODRIVER names the geckodriver binary');
  const proc = spawn(bin, ['--port', String(port), '--websocket-port', String(wsPort)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = [];
  const keep = (d) => { log.push(String(d)); };
  proc.stderr.on('data', keep);
  const ready = new Promise((resolve, reject) => {
    proc.stdout.on('data', (d) => {
      keep(d);
      if (String(d).includes('Listening on')) resolve();
    });
    proc.once('exit', (code) => reject(new Error(`geckodriver exited (${code}): ${log.join('')}`)));
  });
  await within(ready, 'geckodriver listening');
  return { url: `http://127.0.0.1:${port}`, proc, log };
}

// Classic WebDriver: one command, its value (or the error it answered).
async function command(driver, method, path, body) {
  const res = await fetch(driver.url + path, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) {
    throw new Error(`WebDriver ${method} ${path}: ${json.value.error}: ${json.value.message}`);
  }
  return json.value;
}

// WebDriver BiDi over the session's WebSocket: commands with ids, events to listeners.
async function bidi(url) {
  const ws = new WebSocket(url);
  await within(new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`no BiDi connection to ${url}`));
  }), 'the BiDi WebSocket');
  let next = 0;
  const pending = new Map();
  const listeners = [];
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.id !== undefined && pending.has(msg.id)) {
      const { resolve, reject } = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.type === 'error') reject(new Error(`BiDi: ${msg.error}: ${msg.message}`));
      else resolve(msg.result);
    } else if (msg.type === 'event') {
      for (const l of listeners) l(msg.method, msg.params);
    }
  };
  return {
    send(method, params) {
      next += 1;
      const id = next;
      ws.send(JSON.stringify({ id, method, params }));
      return within(new Promise((resolve, reject) => pending.set(id, { resolve, reject })), method);
    },
    on(l) { listeners.push(l); },
    close() { ws.close(); },
  };
}

// A headless Firefox with a fresh profile: its session, the BiDi connection, the page's errors,
// and a request hook. Every request stops at the intercept; `onRequest` may return a promise to
// hold it (a PATCH half-way), else it continues at once.
async function launch() {
  const driver = await startDriver();
  const profileRoot = await mkdtemp(join(tmpdir(), 'ferry-firefox-'));
  let session;
  try {
    session = await command(driver, 'POST', '/session', {
      capabilities: {
        alwaysMatch: {
          browserName: 'firefox',
          webSocketUrl: true,
          unhandledPromptBehavior: 'ignore',
          timeouts: { script: DEADLINE, pageLoad: DEADLINE, implicit: 0 },
          'moz:firefoxOptions': {
            binary: process.env.FERRY_FIREFOX || '/usr/bin/firefox-esr',
            args: ['-headless', '-profile', profileRoot],
            prefs: {
              'network.proxy.type': 0,
              'browser.shell.checkDefaultBrowser': false,
              'app.update.disabledForTesting': true,
            },
          },
        },
      },
    });
  } catch (e) {
    driver.proc.kill();
    await rm(profileRoot, { recursive: true, force: true });
    throw new Error(`${e.message}\n--- geckodriver:\n${driver.log.join('')}`);
  }
  const id = session.sessionId;
  const bus = await bidi(session.capabilities.webSocketUrl);
  const errors = [];
  const requests = [];
  const browser = {
    errors,
    requests,
    onRequest: null,
    bus,
    cmd: (method, path, body) => command(driver, method, `/session/${id}${path}`, body),
    async close() {
      bus.close();
      await command(driver, 'DELETE', `/session/${id}`).catch(() => {});
      driver.proc.kill();
      await rm(profileRoot, { recursive: true, force: true });
    },
  };
  bus.on((method, p) => {
    if (method === 'log.entryAdded' && p.level === 'error') {
      errors.push(`${p.type}: ${p.text}`);
    } else if (method === 'network.beforeRequestSent') {
      const r = p.request;
      const seen = {
        method: r.method,
        url: r.url,
        headers: Object.fromEntries(r.headers.map((h) => [h.name.toLowerCase(), h.value.value])),
      };
      requests.push(seen);
      if (!p.isBlocked) return;
      const go = () => bus.send('network.continueRequest', { request: r.request }).catch(() => {});
      const hold = browser.onRequest && browser.onRequest(seen);
      if (hold) hold.then(go);
      else go();
    }
  });
  await bus.send('session.subscribe', { events: ['log.entryAdded', 'network.beforeRequestSent'] });
  await bus.send('network.addIntercept', { phases: ['beforeRequestSent'] });
  return browser;
}

// Holds the n-th PATCH (1-based) until release() is called; `held` resolves when it is sent.
function holdPatch(browser, n) {
  let count = 0;
  let release;
  const released = new Promise((r) => { release = r; });
  let arrived;
  const held = new Promise((r) => { arrived = r; });
  browser.onRequest = (req) => {
    if (req.method !== 'PATCH') return null;
    count += 1;
    if (count !== n) return null;
    arrived(req);
    return released;
  };
  return { held: within(held, `PATCH number ${n}`), release: () => release() };
}

const patches = (browser, from = 0) => browser.requests.slice(from).filter((r) => r.method === 'PATCH');

// Runs `fn(...args)` in the page; its result.
function run(b, fn, ...args) {
  return b.cmd('POST', '/execute/sync', { script: `return (${fn}).apply(null, arguments);`, args });
}

// Waits in the page, on DOM changes, until `selector` matches; then `fn(element)`'s result.
async function waitFor(b, selector, fn = (el) => true) {
  const script = `
    const [selector, fnText, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
    const fn = eval('(' + fnText + ')');
    const check = () => {
      const el = document.querySelector(selector);
      if (!el) return false;
      observer.disconnect();
      done(fn(el));
      return true;
    };
    const observer = new MutationObserver(check);
    if (!check()) observer.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });`;
  try {
    return await b.cmd('POST', '/execute/async', { script, args: [selector, String(fn)] });
  } catch (e) {
    throw new Error(`waiting for ${selector}: ${e.message}`);
  }
}

async function find(b, selector) {
  const el = await b.cmd('POST', '/element', { using: 'css selector', value: selector });
  return el[ELEMENT];
}

// Chooses a file through the file input, as a user would (WebDriver's "send keys" to it).
async function choose(b, input, ...paths) {
  const el = await find(b, input);
  await b.cmd('POST', `/element/${el}/value`, { text: paths.join('\n') });
}

async function click(b, selector) {
  const el = await find(b, selector);
  await b.cmd('POST', `/element/${el}/click`, {});
}

const li = (path) => `#queue li[data-path="${path}"]`;
const waitState = (b, path, state) => waitFor(b, `${li(path)}[data-state="${state}"]`);
const note = (b, path) => waitFor(b, `${li(path)} .note`, (el) => el.textContent.trim());
const remembered = (b) => run(b, () => Object.keys(localStorage).filter((k) => k.startsWith('ferry.upload.')).length);

// Chooses `file`, and while its n-th PATCH is held clicks its `action` button; waits for `state`.
async function stopHalfWay(b, file, n, action, state) {
  const hold = holdPatch(b, n);
  await choose(b, '#pick-files', join(SRC, file));
  await hold.held;
  await click(b, `${li(file)} button[data-action="${action}"]`);
  await waitState(b, file, state);
  hold.release();
  b.onRequest = null;
}

// A page signed in through a ?token= link, with the live stream connected.
async function open(b, query = '') {
  await b.cmd('POST', '/url', { url: `${BASE}/?token=${encodeURIComponent(TOKEN)}${query}` });
  await waitFor(b, '#live[data-live="yes"]');
  const url = await b.cmd('GET', '/url');
  assert.ok(!url.includes('token='), `the token stays out of the address bar: ${url}`);
}

const scenarios = {
  // The sign-in form, then an upload whose progress is visible while it runs.
  async progress(b) {
    await b.cmd('POST', '/url', { url: `${BASE}/` });
    const field = await find(b, '#token');
    await b.cmd('POST', `/element/${field}/value`, { text: TOKEN });
    await click(b, 'button[type=submit]');
    await waitFor(b, '#live[data-live="yes"]');
    assert.ok(!(await b.cmd('GET', '/url')).includes('token'));
    await b.cmd('POST', '/url', { url: `${BASE}/?chunk=524288` });
    await waitFor(b, '#live[data-live="yes"]');
    const hold = holdPatch(b, 4);
    await choose(b, '#pick-files', join(SRC, 'progress.bin'));
    await hold.held;
    // The third chunk's answer reaches the page just after the fourth PATCH leaves.
    const shown = await waitFor(b, `${li('progress.bin')} progress[value="${3 * 524288}"]`,
      (p) => ({ value: p.value, max: p.max }));
    const stats = await waitFor(b, `${li('progress.bin')} .stats`, (el) => el.textContent.trim());
    assert.ok(shown.value > 0 && shown.value < shown.max, `progress between 0 and the size: ${JSON.stringify(shown)}`);
    assert.match(stats, /1\.5 MiB of 6\.0 MiB \(25%\)/);
    hold.release();
    await waitState(b, 'progress.bin', 'done');
    const done = await waitFor(b, `${li('progress.bin')} progress`, (p) => ({ value: p.value, max: p.max }));
    assert.equal(done.value, done.max);
    await waitFor(b, '#listing a[href="/files/progress.bin"]');
    return { midway: shown, stats, patches: patches(b).map((p) => Number(p.headers['upload-offset'])) };
  },

  // A reload half-way; the same file chosen again continues from the server's offset.
  async resume(b) {
    const chunk = 262144;
    await open(b, `&chunk=${chunk}`);
    const hold = holdPatch(b, 6);
    await choose(b, '#pick-files', join(SRC, 'resume.bin'));
    await hold.held;
    const first = patches(b).map((p) => Number(p.headers['upload-offset']));
    assert.equal(await remembered(b), 1, 'the fingerprint is kept in localStorage');
    b.onRequest = null;
    const mark = b.requests.length;
    await b.cmd('POST', '/refresh', {}); // the sixth PATCH, held, never reaches the server
    hold.release();
    await waitFor(b, '#live[data-live="yes"]');
    // The server's stream lists the unfinished upload until this page takes it over.
    const offered = await waitFor(b, '#elsewhere li[data-path="resume.bin"][data-state="unfinished"]',
      (el) => el.dataset.offset);
    assert.equal(offered, String(5 * chunk));
    const from = b.requests.length;
    await choose(b, '#pick-files', join(SRC, 'resume.bin'));
    await waitState(b, 'resume.bin', 'done');
    assert.equal(await run(b, () => document.querySelectorAll('#elsewhere li').length), 0, 'taken over, no longer elsewhere');
    const message = await note(b, 'resume.bin');
    assert.match(message, /resumed at 1\.3 MiB/, message);
    const second = patches(b, from);
    assert.equal(patches(b, mark).length, second.length, 'no PATCH between the reload and the second choice');
    assert.equal(Number(second[0].headers['upload-offset']), 5 * chunk, `the second page starts at the server's offset`);
    assert.equal(await remembered(b), 0, 'a finished upload is forgotten');
    // What went on the wire is counted by the server (ferry_bytes_received_total): BiDi's
    // bodySize is no byte count in Firefox.
    return { first, second: second.map((p) => Number(p.headers['upload-offset'])) };
  },

  // Pause and resume half-way (the held PATCH is aborted and sent again), then cancel half-way.
  async controls(b) {
    await open(b, '&chunk=262144');
    await stopHalfWay(b, 'paused.bin', 3, 'pause', 'paused');
    const pauseShown = await run(b, (s) => !document.querySelector(s).hidden
      && document.querySelector(s).getClientRects().length > 0, `${li('paused.bin')} button[data-action="pause"]`);
    assert.equal(pauseShown, false, 'no pause button on a paused upload');
    await click(b, `${li('paused.bin')} button[data-action="resume"]`);
    await waitState(b, 'paused.bin', 'done');
    const pausedPatches = patches(b).length;

    const from = b.requests.length;
    await stopHalfWay(b, 'cancelled.bin', 2, 'cancel', 'cancelled');
    const deletes = b.requests.slice(from).filter((r) => r.method === 'DELETE').length;
    assert.equal(deletes, 1, 'the cancelled upload is deleted on the server');
    assert.equal(await remembered(b), 0);
    return {
      counts: { 'paused.bin': pausedPatches, 'cancelled.bin': patches(b, from).length },
    };
  },
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`usage: node --experimental-websocket firefox.mjs ${Object.keys(scenarios).join('|')}`);
  process.exit(2);
}
if (typeof WebSocket === 'undefined') {
  console.error('this Node has no WebSocket: run it with --experimental-websocket (Node >= 20.10)');
  process.exit(2);
}
let browser;
let code = 0;
try {
  browser = await launch();
  const result = await scenarios[name](browser);
  assert.deepEqual(browser.errors, [], 'no errors in the console');
  console.log(JSON.stringify(result));
} catch (e) {
  console.error(`scenario ${name} failed: ${e.stack || e}`);
  if (browser) console.error(`console: ${JSON.stringify(browser.errors)}`);
  code = 1;
} finally {
  if (browser) await browser.close();
}
process.exit(code);
