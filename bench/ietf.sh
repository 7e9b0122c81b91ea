#!/usr/bin/env bash
# bench/ietf.sh: `ferry put --protocol ietf` (the IETF resumable-upload draft) against
# `ferry put` in tus 1.0 into the same `ferry serve` on loopback, interleaved (tus, ietf, tus, …
# with the order alternating) so that a busy machine slows both alike.
#
#   bench/ietf.sh                    # 1 GiB, 5 runs per row
#   RUNS=3 MIB=256 bench/ietf.sh
#
# Rows (every landed file is compared with its source by cmp):
#   tus1    ferry put -x 1                   one upload, 32 MiB PATCHes, BLAKE3 Upload-Checksum
#   ietf    ferry put --protocol ietf        one upload resource, 32 MiB appends, SHA-256
#                                            Content-Digest (the draft has no parallel parts)
#   tus4    ferry put -x 4                   4 partial uploads + concatenation (for scale)
# Prints the median wall and client CPU of each row, the server's CPU per run (from /proc), and
# ietf/tus1. Timing is reported, never judged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

RUNS=${RUNS:-5}
MIB=${MIB:-1024}
CASES=${CASES:-tus1 ietf tus4}
TIMEOUT=${TIMEOUT:-300}
FERRY=${FERRY:-target/release/ferry}
BENCH_PIDS=()
BENCH_CUR=

[ -x "$FERRY" ] || { bench_log "no $FERRY: cargo build --release -p ferry (or set FERRY)"; exit 1; }
bench_install_peers curl:curl time:time
bench_tmpdir
cp "$FERRY" "$T/ferry"
bench_random_file "$T/src.bin" "$MIB"
export FERRY_DATA_DIR="$T/ferry-data"
TOKEN="ietf-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
mkdir -p "$T/serve"
port=$(bench_free_port)
"$T/ferry" serve "$T/serve" --listen "127.0.0.1:$port" --token "$TOKEN" </dev/null >"$T/logs/serve.log" 2>&1 &
SERVE_PID=$!
BENCH_PIDS+=("$SERVE_PID")
URL="http://127.0.0.1:$port/uploads/"
deadline=$((SECONDS + 30))
until curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/metrics"; do
    [ "$SECONDS" -lt "$deadline" ] || { bench_log "ferry serve did not start"; exit 1; }
    sleep 0.1
done

landed=""
same_landed() { cmp -s "$landed" "$T/src.bin" && rm -f "$landed"; }
SERVER_CPU="$T/server-cpu"
: >"$SERVER_CPU"

run_case() { # run_case CASE RUN
    local c=$1 r=$2 args before
    rm -rf "$FERRY_DATA_DIR"
    case $c in
        tus1) args="-x 1" ;;
        tus4) args="-x 4" ;;
        ietf) args="--protocol ietf" ;;
    esac
    landed="$T/serve/$c-$r.bin"
    bench_sample_noise
    before=$(bench_proc_ticks "$SERVE_PID")
    bench_run "$c" ferry "$r" same_landed \
        "$T/ferry put -q --token $TOKEN --name $c-$r.bin $args $T/src.bin $URL" || true
    echo "$c $(( $(bench_proc_ticks "$SERVE_PID") - before ))" >>"$SERVER_CPU"
}

for r in $(seq "$RUNS"); do
    # Alternate the order of the rows, so that none always follows another.
    if [ $((r % 2)) = 1 ]; then order=$CASES; else order=$(echo "$CASES" | tr ' ' '\n' | tac | tr '\n' ' '); fi
    for c in $order; do run_case "$c" "$r"; done
done

med() { awk -v c="$1" -v f="$2" '$1 == c && $4 == "ok" {print (f == "cpu" ? $6 + $7 : $5)}' "$BENCH_RES" | bench_median; }
srv() { awk -v c="$1" -v t="$BENCH_TICKS" '$1 == c {print $2 / t}' "$SERVER_CPU" | bench_median; }
echo "# ferry put: IETF draft vs tus, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, ${MIB} MiB, $RUNS runs each, interleaved"
echo
echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (highest 1-min seen: $BENCH_LOAD_MAX; runs started while compilers ran: $BENCH_BUSY/$BENCH_SAMPLES)"
echo
echo "| row | wall s | MiB/s | client CPU s | server CPU s | runs ok |"
echo "|---|---:|---:|---:|---:|---|"
for c in $CASES; do
    w=$(med "$c" wall) cpu=$(med "$c" cpu) s=$(srv "$c")
    ok=$(awk -v c="$c" '$1 == c && $4 == "ok"' "$BENCH_RES" | wc -l)
    awk -v c="$c" -v w="$w" -v cpu="$cpu" -v s="$s" -v m="$MIB" -v ok="$ok/$RUNS" 'BEGIN {
        printf "| %s | %.2f | %.0f | %.2f | %.2f | %s |\n", c, w, (w > 0 ? m / w : 0), cpu, s, ok }'
done
echo
awk -v a="$(med tus1 wall)" -v b="$(med ietf wall)" -v ac="$(med tus1 cpu)" -v bc="$(med ietf cpu)" 'BEGIN {
    printf "ietf/tus1: wall %.2f, client CPU %.2f (below 1: the draft is faster)\n", (a > 0 ? b / a : 0), (ac > 0 ? bc / ac : 0) }'
