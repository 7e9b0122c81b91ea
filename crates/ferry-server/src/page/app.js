// ferry's upload page: a small tus 1.0 client (creation, PATCH in chunks, HEAD, termination),
// the pre-upload check against the server, a queue with progress, pause, resume and cancel,
// resume after a reload (a fingerprint in localStorage; the server's offset is the truth), and
// the live view of uploads running elsewhere (Server-Sent Events from /page/events).
'use strict';

(() => {
  const TUS = { 'Tus-Resumable': '1.0.0' };
  const params = new URLSearchParams(location.search);
  // A ?token= link signed this browser in (a cookie): keep the token out of the address bar.
  if (params.has('token')) {
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + (rest ? '?' + rest : '') + location.hash);
  }
  // Bytes per PATCH (progress is pushed to other pages once per chunk). ?chunk=BYTES overrides.
  const CHUNK = Math.max(16 * 1024, Number(params.get('chunk')) || 8 * 1024 * 1024);
  const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000, 15000, 30000];
  const STORE = 'ferry.upload.';
  const $ = (sel) => document.querySelector(sel);

  // ---- formatting ------------------------------------------------------------------------
  function human(n) {
    if (n < 1024) return `${n} B`;
    const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let v = n / 1024;
    let u = 0;
    while (v >= 1024 && u + 1 < units.length) { v /= 1024; u += 1; }
    return `${v.toFixed(1)} ${units[u]}`;
  }
  function duration(s) {
    if (!isFinite(s)) return '…';
    s = Math.ceil(s);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }

  // ---- tus -------------------------------------------------------------------------------
  class HttpError extends Error {
    constructor(status, message, offset) {
      super(message || `HTTP ${status}`);
      this.status = status;
      this.offset = offset;
    }
  }
  async function failure(res) {
    const text = (await res.text()).trim();
    const o = res.headers.get('Upload-Offset');
    return new HttpError(res.status, text || `${res.status} ${res.statusText}`, o === null ? undefined : Number(o));
  }
  // Worth retrying: no answer at all, a lock held by another request, a server or gateway error.
  function retriable(e) {
    return e instanceof HttpError ? (e.status === 0 || e.status === 423 || e.status >= 500) : true;
  }
  function b64(s) {
    let bin = '';
    for (const b of new TextEncoder().encode(s)) bin += String.fromCharCode(b);
    return btoa(bin);
  }
  function metadata(fields) {
    return Object.entries(fields).map(([k, v]) => `${k} ${b64(v)}`).join(',');
  }

  // ---- one file --------------------------------------------------------------------------
  class Item {
    constructor(file, path) {
      this.file = file;
      this.path = path;
      this.fp = `${path}:${file.size}:${file.lastModified}`;
      this.url = null;
      this.offset = 0;
      this.xhr = null;
      this.wake = null;
      this.samples = [];
      this.view();
      this.set('queued', 'Waiting');
    }

    view() {
      this.bar = el('progress', { max: String(Math.max(1, this.file.size)), value: '0', 'aria-label': `Progress of ${this.path}` });
      this.note = el('span', { class: 'note', role: 'status' });
      this.stats = el('span', { class: 'stats' });
      this.pauseBtn = el('button', { type: 'button', class: 'secondary', 'data-action': 'pause' }, 'Pause');
      this.resumeBtn = el('button', { type: 'button', class: 'secondary', 'data-action': 'resume' }, 'Resume');
      this.cancelBtn = el('button', { type: 'button', class: 'secondary', 'data-action': 'cancel' }, 'Cancel');
      this.pauseBtn.addEventListener('click', () => this.pause());
      this.resumeBtn.addEventListener('click', () => this.resume());
      this.cancelBtn.addEventListener('click', () => this.cancel());
      this.li = el('li', { class: 'item', 'data-path': this.path },
        el('div', { class: 'top' }, el('span', { class: 'name' }, this.path), this.note),
        this.bar,
        el('div', { class: 'bottom' }, this.stats,
          el('span', { class: 'actions' }, this.pauseBtn, this.resumeBtn, this.cancelBtn)));
      $('#queue').append(this.li);
    }

    set(state, message) {
      this.state = state;
      this.li.dataset.state = state;
      if (message !== undefined) this.note.textContent = message;
      const active = state === 'queued' || state === 'checking' || state === 'uploading';
      this.pauseBtn.hidden = !active;
      this.resumeBtn.hidden = !(state === 'paused' || state === 'error');
      this.resumeBtn.textContent = state === 'error' ? 'Retry' : 'Resume';
      this.cancelBtn.hidden = !(active || state === 'paused' || state === 'error');
      this.showStats();
    }

    progress(offset) {
      const now = performance.now();
      this.offset = offset;
      this.samples.push([now, offset]);
      while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift();
      this.showStats();
    }

    showStats() {
      const size = this.file.size;
      this.bar.value = Math.min(this.offset, size);
      this.li.dataset.offset = String(this.offset);
      const pct = size ? Math.floor((100 * this.offset) / size) : 100;
      let text = `${human(this.offset)} of ${human(size)} (${pct}%)`;
      if (this.state === 'uploading' && this.samples.length > 1) {
        const [t0, b0] = this.samples[0];
        const [t1, b1] = this.samples[this.samples.length - 1];
        const speed = t1 > t0 ? ((b1 - b0) * 1000) / (t1 - t0) : 0;
        if (speed > 0) text += ` · ${human(speed)}/s · ${duration((size - this.offset) / speed)} left`;
      }
      this.stats.textContent = text;
    }

    async run() {
      this.set('checking', 'Checking the server…');
      this.samples = [];
      try {
        // No answer (or a busy server) while checking or creating: ask again. An upload whose
        // creation answer was lost is found by the check and resumed (its fingerprint).
        for (let attempt = 0; ; attempt += 1) {
          try {
            if (!(await this.prepare())) return;
            break;
          } catch (e) {
            if (this.state !== 'checking') return;
            if (!retriable(e) || attempt >= RETRY_DELAYS.length) throw e;
            this.note.textContent = `${e.message}: retrying in ${duration(RETRY_DELAYS[attempt] / 1000)}`;
            await this.pauseFor(RETRY_DELAYS[attempt]);
          }
        }
        forgetElsewhere(this.url);
        await this.send();
      } catch (e) {
        if (this.state === 'checking' || this.state === 'uploading') this.set('error', e.message);
      }
    }

    // The pre-upload check: what the server has at this path decides what happens.
    async prepare() {
      const res = await fetch('/page/target?path=' + encodeURIComponent(this.path), { cache: 'no-store' });
      if (!res.ok) throw await failure(res);
      const t = await res.json();
      if (this.state !== 'checking') return false;
      const remembered = localStorage.getItem(STORE + this.fp);
      switch (t.state) {
        case 'busy':
          this.set('error', 'Someone else is uploading to this path right now.');
          return false;
        case 'directory':
          this.set('error', 'A folder of this name exists on the server.');
          return false;
        case 'unfinished': {
          const url = '/uploads/' + t.id;
          const same = t.length === this.file.size && (t.fingerprint === this.fp || remembered === url);
          if (same) {
            this.url = url;
            this.li.dataset.url = url;
            this.resumedAt = t.offset;
            localStorage.setItem(STORE + this.fp, url);
            this.progress(t.offset);
            return true;
          }
          if (!confirm(`An unfinished upload of another file to ${t.target} exists. Replace it with this file?`)) {
            this.set('skipped', 'Left the other unfinished upload alone.');
            return false;
          }
          return this.create(true);
        }
        case 'exists':
          if (!t.may_replace) {
            this.set('error', 'A file of this name exists and belongs to another user.');
            return false;
          }
          if (!confirm(`${t.target} already exists on the server. Replace it?`)) {
            this.set('skipped', 'Kept the existing file.');
            return false;
          }
          return this.create(true);
        default:
          if (remembered) localStorage.removeItem(STORE + this.fp);
          return this.create(false);
      }
    }

    async create(overwrite) {
      const fields = { filename: this.file.name, path: this.path, fingerprint: this.fp };
      if (this.file.type) fields.filetype = this.file.type;
      if (overwrite) fields.overwrite = 'true';
      const res = await fetch('/uploads/', {
        method: 'POST',
        headers: { ...TUS, 'Upload-Length': String(this.file.size), 'Upload-Metadata': metadata(fields) },
      });
      if (res.status !== 201) throw await failure(res);
      this.url = new URL(res.headers.get('Location'), location.href).pathname;
      this.li.dataset.url = this.url;
      this.resumedAt = undefined;
      if (this.state === 'cancelled') {
        // Cancelled while the server was creating it: it goes too.
        await fetch(this.url, { method: 'DELETE', headers: TUS }).catch(() => {});
        return false;
      }
      localStorage.setItem(STORE + this.fp, this.url);
      this.progress(0);
      return this.state === 'checking';
    }

    async head() {
      const res = await fetch(this.url, { method: 'HEAD', headers: TUS, cache: 'no-store' });
      if (!res.ok) throw new HttpError(res.status, `the server answered ${res.status} for the upload`);
      return Number(res.headers.get('Upload-Offset'));
    }

    patch(offset, end) {
      return new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        this.xhr = xhr;
        xhr.open('PATCH', this.url);
        xhr.setRequestHeader('Tus-Resumable', '1.0.0');
        xhr.setRequestHeader('Upload-Offset', String(offset));
        xhr.setRequestHeader('Content-Type', 'application/offset+octet-stream');
        xhr.upload.onprogress = (ev) => this.progress(offset + ev.loaded);
        xhr.onload = () => {
          this.xhr = null;
          const o = xhr.getResponseHeader('Upload-Offset');
          if (xhr.status === 204) resolve(Number(o));
          else reject(new HttpError(xhr.status, xhr.responseText.trim() || `HTTP ${xhr.status}`, o === null ? undefined : Number(o)));
        };
        xhr.onerror = () => { this.xhr = null; reject(new HttpError(0, 'the connection failed')); };
        xhr.onabort = () => { this.xhr = null; reject(new HttpError(0, 'stopped')); };
        xhr.send(this.file.slice(offset, end));
      });
    }

    // Waits `ms`, or less when paused or cancelled meanwhile.
    pauseFor(ms) {
      return new Promise((resolve) => {
        const timer = setTimeout(resolve, ms);
        this.wake = () => { clearTimeout(timer); resolve(); };
      });
    }

    async send() {
      const size = this.file.size;
      this.set('uploading', this.resumedAt ? `Resuming at ${human(this.resumedAt)}` : 'Uploading');
      let attempt = 0;
      let sync = false;
      for (;;) {
        if (this.state !== 'uploading') return;
        try {
          if (sync) {
            this.progress(await this.head());
            sync = false;
          }
          if (this.offset >= size) break;
          const sent = this.offset;
          const offset = await this.patch(sent, Math.min(size, sent + CHUNK));
          this.progress(offset);
          attempt = 0;
        } catch (e) {
          if (this.state !== 'uploading') return;
          if (e.status === 409 && e.offset !== undefined && e.offset !== this.offset) {
            this.progress(e.offset); // the server is elsewhere: continue from its offset
            continue;
          }
          if (!retriable(e) || attempt >= RETRY_DELAYS.length) throw e;
          const wait = RETRY_DELAYS[attempt];
          attempt += 1;
          this.note.textContent = `${e.message}: retrying in ${duration(wait / 1000)}`;
          await this.pauseFor(wait);
          if (this.state === 'uploading') this.note.textContent = 'Uploading';
          sync = true;
        }
      }
      localStorage.removeItem(STORE + this.fp);
      this.set('done', this.resumedAt ? `Uploaded (resumed at ${human(this.resumedAt)})` : 'Uploaded');
      refreshListing();
    }

    stop() {
      if (this.xhr) this.xhr.abort();
      if (this.wake) this.wake();
    }

    pause() {
      if (this.state === 'queued') { this.set('paused', 'Paused'); return; }
      this.set('paused', 'Paused');
      this.stop();
      pump();
    }

    resume() {
      this.set('queued', 'Waiting');
      pump();
    }

    async cancel() {
      this.set('cancelled', 'Cancelled');
      this.stop();
      localStorage.removeItem(STORE + this.fp);
      // A PATCH cut off a moment ago may still hold the upload (423): ask again a few times.
      // If it never goes, the unfinished upload expires on the server.
      for (let attempt = 0; this.url && attempt < 5; attempt += 1) {
        try {
          const res = await fetch(this.url, { method: 'DELETE', headers: TUS });
          if (res.status !== 423) break;
        } catch (_) { /* no answer: try again */ }
        await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)));
      }
      pump();
    }
  }

  // ---- the queue: one upload at a time, in the order chosen ------------------------------
  const items = [];
  let running = false;
  async function pump() {
    if (running) return;
    running = true;
    try {
      for (let next; (next = items.find((i) => i.state === 'queued'));) await next.run();
    } finally {
      running = false;
    }
  }
  function add(files) {
    for (const [file, path] of files) items.push(new Item(file, path));
    pump();
  }

  // ---- choosing and dropping -------------------------------------------------------------
  $('#pick-files').addEventListener('change', (ev) => {
    add([...ev.target.files].map((f) => [f, f.name]));
    ev.target.value = '';
  });
  $('#pick-folder').addEventListener('change', (ev) => {
    add([...ev.target.files].map((f) => [f, f.webkitRelativePath || f.name]));
    ev.target.value = '';
  });
  const drop = $('#drop');
  drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', async (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    const entries = [...ev.dataTransfer.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    if (entries.length === 0) {
      add([...ev.dataTransfer.files].map((f) => [f, f.name]));
      return;
    }
    const found = [];
    for (const entry of entries) await walk(entry, found);
    add(found);
  });
  // Every file under a dropped entry, with its path relative to what was dropped.
  async function walk(entry, out) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push([file, entry.fullPath.replace(/^\/+/, '')]);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (batch.length === 0) break;
        for (const e of batch) await walk(e, out);
      }
    }
  }

  // ---- the listing -----------------------------------------------------------------------
  const segment = (s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
  async function refreshListing() {
    const table = $('#listing');
    if (!table) return;
    let entries;
    try {
      const res = await fetch('/files/', { headers: { Accept: 'application/json' }, cache: 'no-store' });
      if (!res.ok) return;
      entries = await res.json();
    } catch (_) {
      return;
    }
    const rows = [...table.querySelectorAll('tr')];
    const header = rows.find((r) => r.querySelector('th'));
    for (const r of rows) if (r !== header) r.remove();
    const body = header ? header.parentElement : table;
    for (const e of entries) {
      const dir = e.type === 'dir';
      const link = el('a', { href: '/files/' + segment(e.name) + (dir ? '/' : '') }, e.name + (dir ? '/' : ''));
      const size = el('td', { class: 'n', title: `${e.size} bytes` }, dir ? '-' : human(e.size));
      const when = el('td', {}, new Date(e.modified * 1000).toUTCString());
      body.append(el('tr', {}, el('td', {}, link), size, when));
    }
    table.dataset.refreshed = String(Number(table.dataset.refreshed || 0) + 1);
  }

  // ---- live progress from the server -----------------------------------------------------
  const elsewhere = new Map();
  let streamReady = false;
  function ownUpload(id) {
    return items.some((i) => i.url === '/uploads/' + id);
  }
  // This page took the upload over (it resumes it): it is no longer elsewhere.
  function forgetElsewhere(url) {
    const id = url && url.replace('/uploads/', '');
    const row = elsewhere.get(id);
    if (!row) return;
    row.li.remove();
    elsewhere.delete(id);
    if (elsewhere.size === 0) $('#elsewhere-section').hidden = true;
  }
  function showElsewhere(ev) {
    if (ownUpload(ev.id)) return;
    let row = elsewhere.get(ev.id);
    if (!row) {
      const bar = el('progress', { max: '1', value: '0', 'aria-label': `Progress of ${ev.target}` });
      const note = el('span', { class: 'note', role: 'status' });
      const stats = el('span', { class: 'stats' });
      const li = el('li', { class: 'item', 'data-id': ev.id, 'data-path': ev.target || ev.id },
        el('div', { class: 'top' }, el('span', { class: 'name' }, ev.target || ev.id), note), bar,
        el('div', { class: 'bottom' }, stats));
      row = { li, bar, note, stats };
      elsewhere.set(ev.id, row);
      $('#elsewhere').append(li);
      $('#elsewhere-section').hidden = false;
    }
    return row;
  }
  function connect() {
    const live = $('#live');
    const source = new EventSource('/page/events');
    // Before `ready` come the unfinished uploads as they stand (after a reconnect, again).
    source.addEventListener('open', () => { streamReady = false; });
    source.addEventListener('ready', () => { streamReady = true; live.dataset.live = 'yes'; live.textContent = 'live'; });
    source.addEventListener('error', () => { live.dataset.live = 'no'; live.textContent = 'reconnecting…'; });
    source.addEventListener('progress', (m) => {
      const ev = JSON.parse(m.data);
      const row = showElsewhere(ev);
      if (!row) return;
      const length = ev.length ?? ev.offset;
      row.bar.max = Math.max(1, length);
      row.bar.value = ev.offset;
      if (streamReady) {
        row.li.dataset.state = 'uploading';
        row.note.textContent = 'Uploading elsewhere';
      } else if (row.li.dataset.state !== 'uploading') {
        row.li.dataset.state = 'unfinished';
        row.note.textContent = 'Unfinished: choose the same file to resume it';
      }
      row.li.dataset.offset = String(ev.offset);
      row.stats.textContent = `${human(ev.offset)} of ${ev.length === null ? '?' : human(ev.length)}`;
    });
    // Cancelled or expired elsewhere: no longer anything to show or resume.
    source.addEventListener('ended', (m) => {
      const ev = JSON.parse(m.data);
      forgetElsewhere('/uploads/' + ev.id);
    });
    source.addEventListener('landed', (m) => {
      const ev = JSON.parse(m.data);
      const row = showElsewhere(ev);
      if (row) {
        row.bar.max = Math.max(1, ev.length);
        row.bar.value = ev.length;
        row.li.dataset.state = 'done';
        row.li.dataset.offset = String(ev.length);
        row.note.textContent = 'Landed';
        row.stats.textContent = human(ev.length);
      }
      refreshListing();
    });
  }
  connect();
})();
