#!/usr/bin/env bash
# bench/upload-clients.sh: K tus-js-client processes uploading FILE to one tus endpoint at the
# same time (as K users would), for bench/upload.sh's "K clients at once" rows.
#
#   bench/upload-clients.sh K FILE URL --name NAME [upload.mjs options...]
#
# Client k (1..K) runs `node tests/peers/node/upload.mjs FILE URL --name NAME.k [options...]`;
# every client's output goes to stdout (one JSON line each: bench/upload.sh finds @tus/server's
# upload URLs there). Exits 0 when all K uploads succeeded, else 1 (after all have ended).
set -uo pipefail

[ $# -ge 5 ] && [ "$4" = --name ] || { echo "usage: $0 K FILE URL --name NAME [upload.mjs options...]" >&2; exit 2; }
k=$1 file=$2 url=$3 name=$5
shift 5
node=${FERRY_NODE:-node}
upload="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/peers/node/upload.mjs"
pids=()
for i in $(seq "$k"); do
    "$node" "$upload" "$file" "$url" --name "$name.$i" "$@" &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do
    wait "$p" || rc=1
done
exit "$rc"
