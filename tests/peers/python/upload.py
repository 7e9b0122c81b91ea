#!/usr/bin/env python3
"""Upload one file with tuspy (the tus Python client) to a tus 1.0 endpoint.

Used by ferry's interop test (crates/ferry/tests/serve_tus_clients.rs).

    python upload.py FILE ENDPOINT [--token T] [--header 'Name: v']... [--chunk-size BYTES]
                     [--name NAME] [--meta KEY=VALUE]... [--algorithm sha1|sha256|md5]
                     [--no-checksum] [--retries N]

Every PATCH carries `Upload-Checksum` (tuspy's `upload_checksum=True`) unless --no-checksum;
tuspy always uses sha1, --algorithm swaps in another hashlib algorithm through its
CHECKSUM_ALGORITHM_PAIR class attribute. --token (default: env TUS_TOKEN) sends `Authorization: Bearer T`. --name sets
metadata `filename` (default: the file's base name). --chunk-size is the bytes per PATCH
(default 4 MiB; tuspy holds one chunk in memory). --retries defaults to 0 so that a server
error fails the run.

Prints one JSON line: {"ok": true, "client": "tuspy X", "bytes": N, "seconds": S, "url": ...}
on success; on failure {"ok": false, "error": ..., "status": ..., "body": ...} and exit 1.
Usage errors exit 2.
"""

import argparse
import hashlib
import importlib.metadata
import json
import os
import sys
import time

from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError
from tusclient.uploader import Uploader


def header(value):
    name, sep, v = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"need 'Name: value', not {value!r}")
    return name.strip(), v.strip()


def meta(value):
    key, sep, v = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"need KEY=VALUE, not {value!r}")
    return key, v


def positive(value):
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"need a positive integer, not {value!r}")
    return n


def main():
    p = argparse.ArgumentParser(description="Upload FILE to the tus ENDPOINT with tuspy.")
    p.add_argument("file")
    p.add_argument("endpoint")
    p.add_argument("--token", default=os.environ.get("TUS_TOKEN"))
    p.add_argument("--header", type=header, action="append", default=[])
    p.add_argument("--chunk-size", type=positive, default=4 << 20)
    p.add_argument("--name")
    p.add_argument("--meta", type=meta, action="append", default=[])
    p.add_argument("--algorithm", choices=["sha1", "sha256", "md5"], default="sha1")
    p.add_argument("--no-checksum", action="store_true")
    p.add_argument("--retries", type=int, default=0)
    a = p.parse_args()

    if not os.path.isfile(a.file):
        p.error(f"{a.file} is not a regular file")
    size = os.path.getsize(a.file)
    headers = dict(a.header)
    if a.token:
        headers["Authorization"] = f"Bearer {a.token}"
    metadata = {"filename": a.name or os.path.basename(a.file)}
    metadata.update(dict(a.meta))
    client_name = f"tuspy {importlib.metadata.version('tuspy')}"

    Uploader.CHECKSUM_ALGORITHM_PAIR = (a.algorithm, getattr(hashlib, a.algorithm))

    t0 = time.monotonic()
    uploader = None
    try:
        c = tus_client.TusClient(a.endpoint, headers=headers)
        uploader = c.uploader(
            file_path=a.file,
            chunk_size=a.chunk_size,
            metadata=metadata,
            upload_checksum=not a.no_checksum,
            retries=a.retries,
            retry_delay=1,
        )
        uploader.upload()
    except TusCommunicationError as e:
        body = e.response_content
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        out = {
            "ok": False,
            "client": client_name,
            "error": str(e),
            "status": e.status_code,
            "body": body,
            "url": getattr(uploader, "url", None),
            "offset": getattr(uploader, "offset", None),
        }
        print(json.dumps(out))
        print(f"upload.py: upload of {a.file} to {a.endpoint} failed: {e} (status {e.status_code}, body {body!r})", file=sys.stderr)
        return 1
    except Exception as e:  # connection refused, reset, ...: still one JSON line
        print(json.dumps({"ok": False, "client": client_name, "error": f"{type(e).__name__}: {e}"}))
        print(f"upload.py: upload of {a.file} to {a.endpoint} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    seconds = time.monotonic() - t0
    if uploader.offset != size:
        print(json.dumps({"ok": False, "client": client_name, "error": f"offset {uploader.offset} != size {size}"}))
        return 1
    print(
        json.dumps(
            {
                "ok": True,
                "client": client_name,
                "bytes": size,
                "seconds": round(seconds, 3),
                "url": uploader.url,
                "chunkSize": a.chunk_size,
                "checksum": None if a.no_checksum else uploader.checksum_algorithm_name,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
