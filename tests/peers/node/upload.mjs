#!/usr/bin/env node
// Uploads one file with tus-js-client (the reference tus client) to a tus 1.0 endpoint.
// Used by ferry's interop tests (crates/ferry/tests/serve_tus_clients.rs) and bench/upload.sh.
//
//   node upload.mjs FILE ENDPOINT [options]
//
//   --token T            sends `Authorization: Bearer T` (default: env TUS_TOKEN, else none)
//   --header 'Name: v'   an extra request header (repeatable)
//   --parallel N         parallelUploads (N partial uploads + a final one; needs the server's
//                        concatenation extension); default 1
//   --chunk-size BYTES   one PATCH per BYTES (default: the whole file, or the whole part, in one PATCH)
//   --name NAME          metadata `filename` (default: the file's base name)
//   --meta KEY=VALUE     more metadata (repeatable), e.g. --meta path=dir/a.bin
//   --data-during-creation   creation-with-upload (uploadDataDuringCreation)
//   --retry-delays MS,MS,...  retry on errors with these delays (default: no retries, so that a
//                        server error fails the run instead of being papered over)
//
// The file is read with fs.createReadStream (tus-js-client 4 slices it into ranged read streams),
// so memory stays flat whatever the size.
//
// Prints one JSON line on success:
//   {"ok":true,"client":"tus-js-client 4.3.1","bytes":N,"seconds":S,"url":"...","parallel":N,"chunkSize":B}
// and on failure a JSON line {"ok":false,"error":..., "request":..., "response":...} (method, URL,
// status, response body when tus-js-client has them) on stdout, the error on stderr, exit 1.
// Usage errors exit 2.

import { createReadStream, promises as fs } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { Upload } from 'tus-js-client'

const require = createRequire(import.meta.url)
const CLIENT = `tus-js-client ${require('tus-js-client/package.json').version}`

function usage(msg) {
  if (msg) console.error(`upload.mjs: ${msg}`)
  console.error(
    'usage: node upload.mjs FILE ENDPOINT [--token T] [--header "N: v"]... [--parallel N] [--chunk-size BYTES]\n' +
      '                       [--name NAME] [--meta K=V]... [--data-during-creation] [--retry-delays MS,...]',
  )
  process.exit(2)
}

function parseArgs(argv) {
  const o = {
    positional: [],
    token: process.env.TUS_TOKEN || null,
    headers: {},
    parallel: 1,
    chunkSize: Number.POSITIVE_INFINITY,
    name: null,
    meta: {},
    dataDuringCreation: false,
    retryDelays: null,
  }
  const positiveInt = (flag, v) => {
    const n = Number(v)
    if (!Number.isSafeInteger(n) || n < 1) usage(`${flag} needs a positive integer, not '${v}'`)
    return n
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const value = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`)
      return argv[++i]
    }
    switch (a) {
      case '--token':
        o.token = value()
        break
      case '--header': {
        const h = value()
        const c = h.indexOf(':')
        if (c < 1) usage(`--header needs 'Name: value', not '${h}'`)
        o.headers[h.slice(0, c).trim()] = h.slice(c + 1).trim()
        break
      }
      case '--parallel':
        o.parallel = positiveInt(a, value())
        break
      case '--chunk-size':
        o.chunkSize = positiveInt(a, value())
        break
      case '--name':
        o.name = value()
        break
      case '--meta': {
        const kv = value()
        const e = kv.indexOf('=')
        if (e < 1) usage(`--meta needs KEY=VALUE, not '${kv}'`)
        o.meta[kv.slice(0, e)] = kv.slice(e + 1)
        break
      }
      case '--data-during-creation':
        o.dataDuringCreation = true
        break
      case '--retry-delays':
        o.retryDelays = value()
          .split(',')
          .filter((s) => s !== '')
          .map(Number)
        break
      case '-h':
      case '--help':
        usage()
        break
      default:
        if (a.startsWith('--')) usage(`unknown option ${a}`)
        o.positional.push(a)
    }
  }
  if (o.positional.length !== 2) usage('need FILE and ENDPOINT')
  return o
}

// What tus-js-client knows about a failed request, for a precise report.
function describeError(err) {
  const out = { ok: false, client: CLIENT, error: String(err && err.message ? err.message : err) }
  const req = err && err.originalRequest
  if (req) {
    out.request = { method: req.getMethod(), url: req.getURL() }
  }
  const res = err && err.originalResponse
  if (res) {
    out.response = {
      status: res.getStatus(),
      body: res.getBody(),
      tusResumable: res.getHeader('Tus-Resumable') ?? null,
      uploadOffset: res.getHeader('Upload-Offset') ?? null,
    }
  }
  return out
}

const opts = parseArgs(process.argv.slice(2))
const [file, endpoint] = opts.positional
let size
try {
  const st = await fs.stat(file)
  if (!st.isFile()) usage(`${file} is not a regular file`)
  size = st.size
} catch (e) {
  usage(`cannot read ${file}: ${e.message}`)
}

const headers = { ...opts.headers }
if (opts.token) headers.Authorization = `Bearer ${opts.token}`
const metadata = { filename: opts.name ?? path.basename(file), ...opts.meta }

const t0 = process.hrtime.bigint()
const result = await new Promise((resolve) => {
  const upload = new Upload(createReadStream(file), {
    endpoint,
    headers,
    metadata,
    chunkSize: opts.chunkSize,
    parallelUploads: opts.parallel,
    uploadDataDuringCreation: opts.dataDuringCreation,
    retryDelays: opts.retryDelays,
    storeFingerprintForResuming: false,
    removeFingerprintOnSuccess: false,
    onError: (err) => resolve(describeError(err)),
    onSuccess: () => resolve({ ok: true, url: upload.url }),
  })
  upload.start()
})
const seconds = Number(process.hrtime.bigint() - t0) / 1e9

if (!result.ok) {
  console.log(JSON.stringify(result))
  console.error(`upload.mjs: upload of ${file} to ${endpoint} failed: ${result.error}`)
  process.exit(1)
}
console.log(
  JSON.stringify({
    ok: true,
    client: CLIENT,
    bytes: size,
    seconds: Number(seconds.toFixed(3)),
    url: result.url,
    parallel: opts.parallel,
    chunkSize: Number.isFinite(opts.chunkSize) ? opts.chunkSize : null,
  }),
)
