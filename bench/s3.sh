#!/usr/bin/env bash
# bench/s3.sh: tus uploads into S3, in the same run: tus-js-client into `ferry serve s3://…` and
# into @tus/server with @tus/s3-store (the Node reference server over S3), both storing into one
# s3s-fs (a real S3-compatible server on 127.0.0.1, its data on this disk); same file, rows
# interleaved; then 4 tus-js-client uploads at once into each, and each server's peak RSS.
#
#   bench/s3.sh                    # 1 GiB, 3 runs per row
#   QUICK=1 bench/s3.sh            # smoke run: 64 MiB, 1 run
#   RUNS=5 UPLOAD_MIB=2048 bench/s3.sh
#
# Rows (every stored object is compared with its source by cmp, in s3s-fs's folder):
#   ferry-s3   tus-js-client, one sequential upload (one PATCH)        -> ferry serve s3://bench/ferry
#   tus-s3     the same                                                 -> @tus/server + @tus/s3-store
#   ferry-c4   4 tus-js-client at once, a quarter of the file each      -> ferry serve s3://…
#   tus-c4     the same                                                 -> @tus/server + @tus/s3-store
# Ratios: @tus/s3-store's median wall time over ferry's (above 1: ferry faster); peak RSS (VmHWM
# of the server process over the whole run, which ends with the 4-at-once rows).
#
# Environment: RUNS (default 3), UPLOAD_MIB (1024), TIMEOUT (600 s per upload), QUICK=1,
# NO_BUILD=1 (skip `cargo build --release -p ferry`), FERRY_BIN, FERRY_S3S_FS (default
# target/s3s-fs/bin/s3s-fs, installed like scripts/test.sh does when missing), KEEP=1.
# Installs @tus/server and @tus/s3-store with `npm ci --prefix bench/s3-node` (its
# package-lock.json), tus-js-client from tests/peers/node. Markdown report on stdout.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh
log() { bench_log "s3: $*"; }

if [ -n "${QUICK:-}" ]; then
    : "${UPLOAD_MIB:=64}" "${RUNS:=1}" "${TIMEOUT:=120}"
fi
RUNS=${RUNS:-3}
UPLOAD_MIB=${UPLOAD_MIB:-1024}
TIMEOUT=${TIMEOUT:-600}
export TIMEOUT
NODE=${FERRY_NODE:-node}
PEERS="$REPO/tests/peers/node"
S3NODE="$REPO/bench/s3-node"
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')

for dir in "$PEERS" "$S3NODE"; do
    stamp="$("$NODE" --version) $(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [ "$(cat "$dir/node_modules/.ferry-stamp" 2>/dev/null)" != "$stamp" ]; then
        log "npm ci --prefix $dir"
        npm ci --prefix "$dir" --no-audit --no-fund >&2
        echo "$stamp" >"$dir/node_modules/.ferry-stamp"
    fi
done
S3S_FS=${FERRY_S3S_FS:-${CARGO_TARGET_DIR:-$REPO/target}/s3s-fs/bin/s3s-fs}
if [ ! -x "$S3S_FS" ]; then
    log "cargo install s3s-fs@0.12.0 --features binary --locked"
    cargo install s3s-fs@0.12.0 --features binary --locked --root "$(dirname "$(dirname "$S3S_FS")")" >&2
fi
if [ -z "${NO_BUILD:-}" ]; then
    log "cargo build --release -p ferry"
    cargo build --release -p ferry >&2
fi

bench_tmpdir
FERRY="$T/ferry"
cp "${FERRY_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/ferry}" "$FERRY"
SRC_FILE="$T/src.bin"
bench_random_file "$SRC_FILE" "$UPLOAD_MIB"
NCLIENTS=4
PART_MIB=$((UPLOAD_MIB / NCLIENTS))
PART_FILE="$T/part.bin"
head -c "$((PART_MIB << 20))" "$SRC_FILE" >"$PART_FILE"

# --- servers --------------------------------------------------------------------------------
wait_port() { # wait_port PORT PID NAME (30 s)
    local port=$1 pid=$2 name=$3 deadline=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if (: </dev/tcp/127.0.0.1/"$port") 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { log "$name exited before listening"; return 1; }
        sleep 0.05
    done
    log "$name does not listen on 127.0.0.1:$port after 30 s"
    return 1
}
DATA="$T/s3-data"
BUCKET=bench
mkdir -p "$DATA/$BUCKET"
S3_PORT=$(bench_free_port)
"$S3S_FS" --host 127.0.0.1 --port "$S3_PORT" --access-key bench-key --secret-key bench-secret "$DATA" \
    </dev/null >"$T/s3s-fs.log" 2>&1 &
S3_PID=$!
BENCH_PIDS+=("$S3_PID")
wait_port "$S3_PORT" "$S3_PID" s3s-fs
export AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" AWS_ACCESS_KEY_ID=bench-key \
    AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
    AWS_CONFIG_FILE="$T/none" AWS_SHARED_CREDENTIALS_FILE="$T/none"

TOKEN=t$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
FERRY_PORT=$(bench_free_port)
"$FERRY" serve "s3://$BUCKET/ferry" --state-dir "$T/ferry-state" --listen "127.0.0.1:$FERRY_PORT" \
    --token "$TOKEN" </dev/null >"$T/ferry-serve.out" 2>"$T/ferry-serve.err" &
FERRY_PID=$!
BENCH_PIDS+=("$FERRY_PID")
wait_port "$FERRY_PORT" "$FERRY_PID" "ferry serve"
FERRY_URL="http://127.0.0.1:$FERRY_PORT/uploads/"

"$NODE" "$S3NODE/tus-s3-server.mjs" "$BUCKET" </dev/null >"$T/tus.out" 2>"$T/tus.err" &
TUS_PID=$!
BENCH_PIDS+=("$TUS_PID")
TUS_URL=
for _ in $(seq 600); do
    TUS_URL=$(sed -n '1s/^listening on \(http:\/\/[^ ]*\).*/\1/p' "$T/tus.out")
    [ -z "$TUS_URL" ] || break
    kill -0 "$TUS_PID" 2>/dev/null || break
    sleep 0.05
done
[ -n "$TUS_URL" ] || { log "@tus/server did not start: $(tail -c 500 "$T/tus.err")"; exit 1; }
log "s3s-fs pid $S3_PID, ferry serve pid $FERRY_PID, @tus/server + @tus/s3-store pid $TUS_PID"

# --- rows -----------------------------------------------------------------------------------
CASE="${UPLOAD_MIB}MiB"
UP="$NODE $PEERS/upload.mjs"
CUR_TOOL= CUR_RUN= CUR_NAME=
stored() { # "OBJECT SOURCE" per stored object of the current run
    local src=$SRC_FILE names=$CUR_NAME logf="$T/logs/$CASE.$CUR_TOOL.$CUR_RUN.log"
    case $CUR_TOOL in *-c4) src=$PART_FILE names=$(for i in $(seq "$NCLIENTS"); do echo "$CUR_NAME.$i"; done) ;; esac
    case $CUR_TOOL in
    ferry-*) for n in $names; do echo "$DATA/$BUCKET/ferry/$n $src"; done ;;
    *) sed -n 's/.*"url":"\([^"]*\)".*/\1/p' "$logf" | while read -r url; do
           id=${url##*/}; echo "$DATA/$BUCKET/${id%%+*} $src"; done ;;
    esac
}
verify() {
    local f src n=0 want=1
    case $CUR_TOOL in *-c4) want=$NCLIENTS ;; esac
    while read -r f src; do
        n=$((n + 1))
        cmp -s "$f" "$src" || { log "$CUR_TOOL run $CUR_RUN: $f missing or different"; return 1; }
    done < <(stored)
    [ "$n" = "$want" ] || { log "$CUR_TOOL run $CUR_RUN: $n objects, $want expected"; return 1; }
}
: >"$T/server-cpu"
bad=0
for stage in single c4; do
    if [ "$stage" = single ]; then ROWS=(ferry-s3 tus-s3); else ROWS=(ferry-c4 tus-c4); fi
    for run in $(seq "$RUNS"); do
        for i in 0 1; do
            tool=${ROWS[$(((i + run - 1) % 2))]}
            CUR_TOOL=$tool CUR_RUN=$run CUR_NAME="$tool.$run.bin"
            case $tool in
            ferry-*) url=$FERRY_URL pid=$FERRY_PID auth="--token $TOKEN" ;;
            *) url=$TUS_URL pid=$TUS_PID auth="" ;;
            esac
            case $tool in
            *-c4) cmd="$REPO/bench/upload-clients.sh $NCLIENTS $PART_FILE $url --name $CUR_NAME $auth" ;;
            *) cmd="$UP $SRC_FILE $url $auth --name $CUR_NAME" ;;
            esac
            bench_sample_noise
            before=$(bench_proc_ticks "$pid" "$S3_PID")
            bench_run "$CASE" "$tool" "$run" verify "$cmd" || bad=1
            after=$(bench_proc_ticks "$pid" "$S3_PID")
            echo "$tool $run $(awk -v a="$after" -v b="$before" -v t="$BENCH_TICKS" 'BEGIN {printf "%.2f", (a-b)/t}')" >>"$T/server-cpu"
            while read -r f _; do rm -f "$f"; done < <(stored 2>/dev/null || true)
        done
    done
done
FERRY_HWM=$(bench_proc_hwm "$FERRY_PID")
TUS_HWM=$(bench_proc_hwm "$TUS_PID")

# --- report ---------------------------------------------------------------------------------
declare -A MED
echo "# S3 uploads: ferry serve s3:// vs @tus/server + @tus/s3-store ($STARTED)"
echo
echo "$(nproc) cores, load average up to $BENCH_LOAD_MAX; $BENCH_BUSY of $BENCH_SAMPLES runs started while compilers ran."
echo "ferry $("$FERRY" --version | head -1), s3s-fs $("$S3S_FS" --version | cut -d' ' -f2), @tus/s3-store $(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$S3NODE/node_modules/@tus/s3-store/package.json"), tus-js-client $(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$PEERS/node_modules/tus-js-client/package.json"); medians of $RUNS runs."
echo
echo "| row | runs ok | wall s (median) | MiB/s | server+s3s-fs CPU s |"
echo "|---|---|---|---|---|"
for tool in ferry-s3 tus-s3 ferry-c4 tus-c4; do
    read -r ok total _ wall _ < <(bench_stats "$CASE" "$tool")
    MED[$tool]=$wall
    mib=$UPLOAD_MIB
    case $tool in *-c4) mib=$((NCLIENTS * PART_MIB)) ;; esac
    speed=$(awk -v m="$mib" -v w="$wall" 'BEGIN {printf "%.0f", (w>0 ? m/w : 0)}')
    cpu=$(awk -v t="$tool" '$1==t {print $3}' "$T/server-cpu" | bench_median)
    echo "| $tool | $ok/$total | $wall | $speed | $cpu |"
done
ratio() { awk -v f="${MED[$1]}" -v p="${MED[$2]}" 'BEGIN {if (f>0 && p>0) printf "%.2f", p/f; else print "n/a"}'; }
echo
echo "Speed ratio (@tus/s3-store wall / ferry wall; above 1: ferry faster): one upload $(ratio ferry-s3 tus-s3), 4 at once $(ratio ferry-c4 tus-c4)."
echo "Peak RSS over the run: ferry serve $((FERRY_HWM / 1024)) MiB, @tus/server + @tus/s3-store $((TUS_HWM / 1024)) MiB (ratio $(awk -v a="$FERRY_HWM" -v b="$TUS_HWM" 'BEGIN {if (a>0) printf "%.2f", b/a; else print "n/a"}'))."
exit "$bad"
