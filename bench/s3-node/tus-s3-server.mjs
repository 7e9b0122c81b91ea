#!/usr/bin/env node
// @tus/server with @tus/s3-store: the Node reference tus server over S3, for bench/s3.sh.
//
//   node tus-s3-server.mjs BUCKET
//
// Endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
// AWS_REGION (path-style addressing, as S3-compatible servers need). @tus/s3-store's defaults
// (8 MiB preferred parts, parts spooled to the OS temp dir). Listens on 127.0.0.1:0 and prints
// `listening on http://127.0.0.1:PORT/uploads/` once it accepts connections. No authentication.

import { Server } from '@tus/server'
import { S3Store } from '@tus/s3-store'

const bucket = process.argv[2]
if (!bucket) {
  console.error('usage: node tus-s3-server.mjs BUCKET')
  process.exit(2)
}
const server = new Server({
  path: '/uploads',
  datastore: new S3Store({
    s3ClientConfig: {
      bucket,
      endpoint: process.env.AWS_ENDPOINT_URL,
      region: process.env.AWS_REGION || 'us-east-1',
      forcePathStyle: true,
      credentials: {
        accessKeyId: process.env.AWS_ACCESS_KEY_ID,
        secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
      },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    },
  }),
})
const http = server.listen({ host: '127.0.0.1', port: 0 }, () => {
  console.log(`listening on http://127.0.0.1:${http.address().port}/uploads/`)
})
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0))
