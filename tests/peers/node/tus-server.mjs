#!/usr/bin/env node
// @tus/server with its FileStore: the Node reference tus server, as a peer for bench/upload.sh
// (tus-js-client into @tus/server vs into ferry serve) and for `ferry put` tests.
//
//   node tus-server.mjs DIR [--listen HOST:PORT] [--path /uploads] [--max-size BYTES]
//
// Stores each upload as DIR/<id> (plus DIR/<id>.json with its metadata), where <id> is the last
// path segment of the upload URL. Listens on 127.0.0.1:0 (a free port) by default and prints
// `listening on http://HOST:PORT/uploads/` as the first line of stdout once it accepts
// connections. No authentication. Stops on SIGINT/SIGTERM.
//
// @tus/server 2.x implements creation, creation-with-upload, creation-defer-length, termination
// and expiration (when configured), but not concatenation (so no parallelUploads) or checksum.

import { readFileSync, promises as fs } from 'node:fs'
import { FileStore } from '@tus/file-store'
import { Server } from '@tus/server'

// @tus/server's package.json is not in its "exports": read it from node_modules beside this file.
const VERSION = JSON.parse(
  readFileSync(new URL('./node_modules/@tus/server/package.json', import.meta.url), 'utf8'),
).version

function usage(msg) {
  if (msg) console.error(`tus-server.mjs: ${msg}`)
  console.error('usage: node tus-server.mjs DIR [--listen HOST:PORT] [--path /uploads] [--max-size BYTES]')
  process.exit(2)
}

const args = process.argv.slice(2)
let dir = null
let listen = '127.0.0.1:0'
let route = '/uploads'
let maxSize
for (let i = 0; i < args.length; i++) {
  const a = args[i]
  const value = () => {
    if (i + 1 >= args.length) usage(`${a} needs a value`)
    return args[++i]
  }
  if (a === '--listen') listen = value()
  else if (a === '--path') route = value().replace(/\/+$/, '')
  else if (a === '--max-size') maxSize = Number(value())
  else if (a === '-h' || a === '--help') usage()
  else if (a.startsWith('--')) usage(`unknown option ${a}`)
  else if (dir === null) dir = a
  else usage(`unexpected argument ${a}`)
}
if (dir === null) usage('need DIR')
const colon = listen.lastIndexOf(':')
if (colon < 1) usage(`--listen needs HOST:PORT, not '${listen}'`)
const host = listen.slice(0, colon)
const port = Number(listen.slice(colon + 1))
if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`bad port in '${listen}'`)
await fs.mkdir(dir, { recursive: true })

const server = new Server({
  path: route,
  datastore: new FileStore({ directory: dir }),
  ...(maxSize ? { maxSize } : {}),
})
const http = server.listen({ host, port }, () => {
  const a = http.address()
  console.log(`listening on http://${a.address}:${a.port}${route}/ (@tus/server ${VERSION}, FileStore in ${dir})`)
})
http.on('error', (e) => {
  console.error(`tus-server.mjs: ${e.message}`)
  process.exit(1)
})
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    http.close()
    process.exit(0)
  })
}
