#!/usr/bin/env node
// Uploads one file with tus-js-client speaking the IETF resumable-upload draft
// (`protocol: 'ietf-draft-05'`, interop version 6), chunked, optionally interrupted mid-PATCH and
// resumed from the server's offset by a second Upload on the same upload URL (HEAD, then PATCHes
// from the offset). Used by crates/ferry/tests/serve_ietf.rs.
//
//   node upload-ietf.mjs FILE ENDPOINT [--token T] [--chunk-size BYTES] [--name NAME]
//                        [--meta KEY=VALUE]... [--interrupt-after BYTES]
//
//   --interrupt-after BYTES  abort the upload (no termination) once BYTES went out, then resume
//
// Prints one JSON line: {"ok":true,"client":..., "bytes":N,"url":..., "interrupted":bool,
// "resumedFrom":OFFSET|null} or {"ok":false,"error":...,"request":...,"response":...} (exit 1).

import { createReadStream, promises as fs } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { Upload } from 'tus-js-client'

const require = createRequire(import.meta.url)
const CLIENT = `tus-js-client ${require('tus-js-client/package.json').version} (ietf-draft-05)`

function usage(msg) {
  if (msg) console.error(`upload-ietf.mjs: ${msg}`)
  console.error(
    'usage: node upload-ietf.mjs FILE ENDPOINT [--token T] [--chunk-size BYTES] [--name NAME] [--meta K=V]... [--interrupt-after BYTES]',
  )
  process.exit(2)
}

const o = { positional: [], token: null, chunkSize: Number.POSITIVE_INFINITY, name: null, meta: {}, interruptAfter: null }
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]
  const value = () => {
    if (i + 1 >= argv.length) usage(`${a} needs a value`)
    return argv[++i]
  }
  const positive = (v) => {
    const n = Number(v)
    if (!Number.isSafeInteger(n) || n < 1) usage(`${a} needs a positive integer, not '${v}'`)
    return n
  }
  if (a === '--token') o.token = value()
  else if (a === '--chunk-size') o.chunkSize = positive(value())
  else if (a === '--name') o.name = value()
  else if (a === '--interrupt-after') o.interruptAfter = positive(value())
  else if (a === '--meta') {
    const kv = value()
    const e = kv.indexOf('=')
    if (e < 1) usage(`--meta needs KEY=VALUE, not '${kv}'`)
    o.meta[kv.slice(0, e)] = kv.slice(e + 1)
  } else if (a.startsWith('--')) usage(`unknown option ${a}`)
  else o.positional.push(a)
}
if (o.positional.length !== 2) usage('need FILE and ENDPOINT')
const [file, endpoint] = o.positional
const size = (await fs.stat(file)).size
const headers = o.token ? { Authorization: `Bearer ${o.token}` } : {}
const metadata = { filename: o.name ?? path.basename(file), ...o.meta }

function describeError(err) {
  const out = { ok: false, client: CLIENT, error: String(err && err.message ? err.message : err) }
  const req = err && err.originalRequest
  if (req) out.request = { method: req.getMethod(), url: req.getURL() }
  const res = err && err.originalResponse
  if (res) {
    out.response = {
      status: res.getStatus(),
      body: res.getBody(),
      uploadOffset: res.getHeader('Upload-Offset') ?? null,
      uploadComplete: res.getHeader('Upload-Complete') ?? null,
    }
  }
  return out
}

// One Upload; resolves when it succeeds, fails, or was interrupted on purpose.
// The resumed run retries (423 while the server still holds the interrupted request's lock).
function run(uploadUrl, interruptAfter) {
  return new Promise((resolve) => {
    let firstAccepted = null
    const upload = new Upload(createReadStream(file), {
      endpoint,
      uploadUrl,
      headers,
      metadata,
      protocol: 'ietf-draft-05',
      chunkSize: o.chunkSize,
      storeFingerprintForResuming: false,
      removeFingerprintOnSuccess: false,
      retryDelays: uploadUrl ? [200, 500, 1000, 2000, 4000] : null,
      onProgress: (sent) => {
        if (interruptAfter !== null && sent >= interruptAfter) {
          interruptAfter = null
          upload.abort(false).then(() => resolve({ interrupted: true, url: upload.url }))
        }
      },
      onChunkComplete: (chunk, accepted) => {
        if (firstAccepted === null) firstAccepted = accepted - chunk
      },
      onError: (err) => resolve(describeError(err)),
      onSuccess: () => resolve({ ok: true, url: upload.url, resumedFrom: firstAccepted }),
    })
    upload.start()
  })
}

let result = await run(null, o.interruptAfter)
const interrupted = result.interrupted === true
if (interrupted) {
  if (!result.url) {
    console.log(JSON.stringify({ ok: false, client: CLIENT, error: 'interrupted before the upload URL was known' }))
    process.exit(1)
  }
  result = await run(result.url, null)
}
if (!result.ok) {
  console.log(JSON.stringify(result))
  console.error(`upload-ietf.mjs: upload of ${file} to ${endpoint} failed: ${result.error}`)
  process.exit(1)
}
console.log(
  JSON.stringify({
    ok: true,
    client: CLIENT,
    bytes: size,
    url: result.url,
    interrupted,
    resumedFrom: interrupted ? result.resumedFrom : null,
  }),
)
