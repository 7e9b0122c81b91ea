#!/usr/bin/env bash
# bench/redis.sh: what sharing upload state in Redis costs `ferry serve`, on loopback:
#   1. per-PATCH cost: tus-js-client uploads PATCH_MIB in CHUNK_KIB chunks (one PATCH each) into
#      one ferry serve with the embedded store (redb) and into one with --store redis://;
#   2. scale-out: `ferry put -x 4` of UPLOAD_MIB through nginx round robin to two instances
#      sharing Redis and one directory, against the same nginx in front of one such instance.
#
#   bench/redis.sh                  # from anywhere in the repo; 3 runs per row
#   QUICK=1 bench/redis.sh          # smoke run: small sizes, 1 run
#   RUNS=5 PATCH_MIB=64 CHUNK_KIB=64 UPLOAD_MIB=1024 bench/redis.sh
#
# Environment: RUNS (3), PATCH_MIB (32), CHUNK_KIB (64), UPLOAD_MIB (512), TIMEOUT (300 s per
# upload), NO_BUILD=1 (skip cargo build), KEEP=1 (keep the temp dir), FERRY_BIN, FERRY_NODE,
# FERRY_REDIS (redis-server binary), FERRY_NGINX, BENCH_EMBEDDED=1 (no title: bench/run's
# `redis` case puts the body under its own heading).
# Installs what is missing with apt-get (redis-server, nodejs, npm, time, nginx) and the Node tus
# peers (npm ci --prefix tests/peers/node). Every stored file is compared with its source by cmp.
# The report (markdown) goes to stdout, progress to stderr; exit 1 when a run failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh
log() { bench_log "redis: $*"; }

if [ -n "${QUICK:-}" ]; then
    : "${PATCH_MIB:=8}" "${UPLOAD_MIB:=64}" "${RUNS:=1}" "${TIMEOUT:=60}"
fi
RUNS=${RUNS:-3}
PATCH_MIB=${PATCH_MIB:-32}
CHUNK_KIB=${CHUNK_KIB:-64}
UPLOAD_MIB=${UPLOAD_MIB:-512}
TIMEOUT=${TIMEOUT:-300}
FERRY_SRC=${FERRY_BIN:-$REPO/target/release/ferry}
NODE=${FERRY_NODE:-node}
PEERS="$REPO/tests/peers/node"
TOKEN=bench-redis-token-sixteen

bench_install_peers node:nodejs npm:npm "${FERRY_REDIS:-redis-server}:redis-server"
REDIS=${FERRY_REDIS:-$(command -v redis-server)}
stamp="$("$NODE" --version) $(sha256sum "$PEERS/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$PEERS/node_modules/.ferry-stamp" 2>/dev/null)" != "$stamp" ]; then
    log "npm ci --prefix tests/peers/node"
    npm ci --prefix "$PEERS" --no-audit --no-fund >&2
    echo "$stamp" >"$PEERS/node_modules/.ferry-stamp"
fi
if [ -z "${NO_BUILD:-}" ]; then
    log "cargo build --release -p ferry"
    cargo build --release -p ferry >&2
fi

bench_tmpdir
FERRY="$T/ferry"
cp "$FERRY_SRC" "$FERRY"

# wait_port PORT PID NAME: until PORT accepts connections (30 s deadline) while PID lives.
wait_port() {
    local port=$1 pid=$2 name=$3 _
    for _ in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || { log "$name exited"; return 1; }
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    log "$name does not listen on $port"
    return 1
}

REDIS_PORT=$(bench_free_port)
mkdir -p "$T/redis"
"$REDIS" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$T/redis" \
    --logfile "$T/redis/redis.log" </dev/null >/dev/null 2>&1 &
REDIS_PID=$!
BENCH_PIDS+=("$REDIS_PID")
wait_port "$REDIS_PORT" "$REDIS_PID" redis-server
STORE_URL="redis://127.0.0.1:$REDIS_PORT/0"

# serve NAME DIR [ARGS...]: starts ferry serve; sets PORT_<NAME>.
serve() {
    local name=$1 dir=$2 port pid
    shift 2
    mkdir -p "$dir"
    port=$(bench_free_port)
    "$FERRY" serve "$dir" --listen "127.0.0.1:$port" --token "$TOKEN" "$@" \
        </dev/null >"$T/$name.out" 2>"$T/$name.err" &
    pid=$!
    BENCH_PIDS+=("$pid")
    wait_port "$port" "$pid" "ferry serve ($name)"
    printf -v "PORT_$name" '%s' "$port"
}

# proxy NAME BACKEND_PORT...: nginx round robin in front of the backends; sets URL_<NAME>.
proxy() {
    local name=$1 n="$T/nginx-$1" port b servers=""
    shift
    for b in "$@"; do servers+="server 127.0.0.1:$b max_fails=0; "; done
    mkdir -p "$n"/{client_body,proxy,fastcgi,uwsgi,scgi}
    port=$(bench_free_port)
    cat >"$n/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $n/client_body;
    proxy_temp_path $n/proxy;
    fastcgi_temp_path $n/fastcgi;
    uwsgi_temp_path $n/uwsgi;
    scgi_temp_path $n/scgi;
    access_log off;
    upstream backends { $servers keepalive 32; }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_request_buffering off;
            proxy_buffering off;
            client_max_body_size 0;
        }
    }
}
CONF
    "$NGINX" -p "$n" -c "$n/nginx.conf" -e "$n/error.log" </dev/null >"$n/stderr.log" 2>&1 &
    BENCH_PIDS+=("$!")
    wait_port "$port" "$!" "nginx ($name)"
    printf -v "URL_$name" '%s' "http://127.0.0.1:$port/uploads/"
}

serve redb "$T/root-redb"
serve redis "$T/root-redis" --store "$STORE_URL"
serve a "$T/root-shared" --store "$STORE_URL"
serve b "$T/root-shared" --store "$STORE_URL"
proxy one "$PORT_a"
proxy two "$PORT_a" "$PORT_b"

bench_random_file "$T/patch.bin" "$PATCH_MIB"
bench_random_file "$T/put.bin" "$UPLOAD_MIB"
PATCHES=$(((PATCH_MIB * 1024 + CHUNK_KIB - 1) / CHUNK_KIB))
RES="$T/res"
: >"$RES"
failed=0

# measure ROW STORED_FILE SOURCE CMD...: wall seconds of CMD into $RES, stored file checked.
measure() {
    local row=$1 stored=$2 src=$3 start end
    shift 3
    start=$(date +%s.%N)
    if timeout -k 10 "$TIMEOUT" "$@" >"$T/$row.log" 2>&1 && cmp -s "$src" "$stored"; then
        end=$(date +%s.%N)
        echo "$row $(echo "$end - $start" | bc -l | awk '{printf "%.3f", $1}')" >>"$RES"
        log "$row: $(tail -1 "$RES" | cut -d' ' -f2) s"
    else
        log "$row FAILED: $(tail -c 400 "$T/$row.log" | tr '\n' ' ')"
        failed=1
    fi
    rm -f "$stored"
}

for run in $(seq "$RUNS"); do
    for row in redb redis; do
        port_var="PORT_$row"
        measure "patch-$row" "$T/root-$row/p$run.bin" "$T/patch.bin" \
            "$NODE" "$PEERS/upload.mjs" "$T/patch.bin" "http://127.0.0.1:${!port_var}/uploads/" \
            --token "$TOKEN" --chunk-size $((CHUNK_KIB * 1024)) --name "p$run.bin"
    done
    for row in one two; do
        url_var="URL_$row"
        rm -rf "$T/ferry-data"
        measure "put-$row" "$T/root-shared/$row$run.bin" "$T/put.bin" \
            env FERRY_DATA_DIR="$T/ferry-data" FERRY_TOKEN="$TOKEN" \
            "$FERRY" put -q -x 4 --name "$row$run.bin" "$T/put.bin" "${!url_var}"
    done
done

median() { awk -v r="$1" '$1 == r {print $2}' "$RES" | bench_median; }
fmt() { awk -v f="$1" '{printf f, $1}'; }
ms_per_patch() { echo "$(median "$1") * 1000 / $PATCHES" | bc -l | fmt %.2f; }
mib_s() { echo "$UPLOAD_MIB / $(median "$1")" | bc -l | fmt %.0f; }
ratio() { echo "$1 / $2" | bc -l | fmt %.2f; }
extra_ms() { echo "($(median patch-redis) - $(median patch-redb)) * 1000 / $PATCHES" | bc -l | fmt %.3f; }

if [ -z "${BENCH_EMBEDDED:-}" ]; then
    echo "### Several instances sharing Redis (bench/redis.sh)"
    echo
fi
cat <<REPORT
$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(bench_version redis "$REDIS" --version | cut -d' ' -f1-3), medians of $RUNS runs;
every instance, nginx, Redis and the client share the same 2 cores and disk.

| row | what | median wall (s) | per PATCH (ms) / rate |
| --- | --- | --- | --- |
| patch-redb | tus-js-client, $PATCHES PATCHes of $CHUNK_KIB KiB → one ferry serve, embedded store | $(median patch-redb) | $(ms_per_patch patch-redb) ms |
| patch-redis | the same → one ferry serve --store redis:// | $(median patch-redis) | $(ms_per_patch patch-redis) ms |
| put-one | ferry put -x 4, $UPLOAD_MIB MiB → nginx → one instance (Redis) | $(median put-one) | $(mib_s put-one) MiB/s |
| put-two | the same → nginx round robin → two instances, one Redis, one directory | $(median put-two) | $(mib_s put-two) MiB/s |

Ratios: per-PATCH wall Redis / embedded **$(ratio "$(median patch-redis)" "$(median patch-redb)")** (both include Node's start-up;
the difference is $(extra_ms) ms per PATCH); two instances / one behind nginx, wall time
**$(ratio "$(median put-two)" "$(median put-one)")** (below 1: faster).
REPORT
exit "$failed"
