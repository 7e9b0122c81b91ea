#!/usr/bin/env bash
# bench/ab.sh: two builds of ferry against each other, interleaved (A, B, A, B, …) so that a
# busy machine slows both alike; for refactorings that must not change speed.
#
#   A=/path/to/old/ferry B=target/release/ferry bench/ab.sh
#   RUNS=9 MIB=512 CASES="get8 put4" A=… B=… bench/ab.sh
#
# Cases (each build against its own servers where there is one):
#   get1, get8   `ferry get -x 1` / `-x 8` of MIB MiB from one nginx (page cache, sendfile)
#   put1, put4   `ferry put -x 1` / `-x 4` of MIB MiB into the same build's `ferry serve`
#   recv         `ferry recv -x 8` of MIB MiB from the same build's `ferry send`
# Every output is compared with the source. Prints, per case, the median wall and CPU seconds of
# each build and B/A (below 1: B is faster). Timing is reported, never judged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

: "${A:?set A to the first ferry binary}" "${B:?set B to the second ferry binary}"
RUNS=${RUNS:-7}
MIB=${MIB:-1024}
CASES=${CASES:-get1 get8 put1 put4 recv}
TIMEOUT=${TIMEOUT:-300}
BENCH_PIDS=()
BENCH_CUR=

bench_install_peers curl:curl time:time
bench_tmpdir
cp "$A" "$T/ferry-a"
cp "$B" "$T/ferry-b"
bench_random_file "$T/root/src.bin" "$MIB"
bench_start_nginx "$T/root"
export FERRY_DATA_DIR="$T/ferry-data"
TOKEN="ab-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

same_out() { cmp -s "$T/out/src.bin" "$T/root/src.bin"; }
landed=""
same_landed() { cmp -s "$landed" "$T/root/src.bin" && rm -f "$landed"; }
same_recv() { cmp -s "$T/out/src.bin" "$T/root/src.bin"; }

declare -A SERVE_URL TICKET
for b in a b; do
    mkdir -p "$T/serve-$b"
    port=$(bench_free_port)
    "$T/ferry-$b" serve "$T/serve-$b" --listen "127.0.0.1:$port" --token "$TOKEN" \
        </dev/null >"$T/logs/serve-$b.log" 2>&1 &
    BENCH_PIDS+=("$!")
    SERVE_URL[$b]="http://127.0.0.1:$port/uploads/"
    mkdir -p "$T/share-$b" && ln "$T/root/src.bin" "$T/share-$b/src.bin"
    "$T/ferry-$b" send "$T/share-$b/src.bin" --listen 127.0.0.1:0 </dev/null \
        >"$T/logs/send-$b.out" 2>"$T/logs/send-$b.err" &
    BENCH_PIDS+=("$!")
done
for b in a b; do
    deadline=$((SECONDS + TIMEOUT))
    until [ -s "$T/logs/send-$b.out" ] && curl -s -o /dev/null "${SERVE_URL[$b]%/uploads/}/metrics"; do
        [ "$SECONDS" -lt "$deadline" ] || { bench_log "build $b: no server or ticket"; exit 1; }
        sleep 0.1
    done
    TICKET[$b]=$(head -1 "$T/logs/send-$b.out")
done

run_case() { # run_case CASE BUILD RUN
    local c=$1 b=$2 r=$3 f="$T/ferry-$2"
    rm -rf "$FERRY_DATA_DIR"
    case $c in
        get1) bench_run "$c" "$b" "$r" same_out "$f get -q -x 1 $BASE/src.bin -o %OUT%/src.bin" ;;
        get8) bench_run "$c" "$b" "$r" same_out "$f get -q -x 8 $BASE/src.bin -o %OUT%/src.bin" ;;
        put1 | put4)
            landed="$T/serve-$b/$c-$r.bin"
            bench_run "$c" "$b" "$r" same_landed \
                "$f put -q --token $TOKEN --name $c-$r.bin -x ${c#put} $T/root/src.bin ${SERVE_URL[$b]}" ;;
        recv) bench_run "$c" "$b" "$r" same_recv "$f recv -q -x 8 -d %OUT% ${TICKET[$b]}" ;;
    esac || true
}

for r in $(seq "$RUNS"); do
    for c in $CASES; do
        # Alternate which build goes first, so neither always follows the other.
        if [ $((r % 2)) = 1 ]; then order="a b"; else order="b a"; fi
        for b in $order; do run_case "$c" "$b" "$r"; done
    done
done

med() { awk -v c="$1" -v b="$2" -v f="$3" '$1 == c && $2 == b && $4 == "ok" {print (f == "cpu" ? $6 + $7 : $5)}' "$BENCH_RES" | bench_median; }
echo "# ferry A/B: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, ${MIB} MiB, $RUNS runs each, interleaved"
echo
echo "- A: $A"
echo "- B: $B"
echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| case | A wall s | B wall s | B/A wall | A CPU s | B CPU s | B/A CPU | runs ok A/B |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
for c in $CASES; do
    aw=$(med "$c" a wall) bw=$(med "$c" b wall) ac=$(med "$c" a cpu) bc=$(med "$c" b cpu)
    oka=$(awk -v c="$c" '$1 == c && $2 == "a" && $4 == "ok"' "$BENCH_RES" | wc -l)
    okb=$(awk -v c="$c" '$1 == c && $2 == "b" && $4 == "ok"' "$BENCH_RES" | wc -l)
    awk -v c="$c" -v aw="$aw" -v bw="$bw" -v ac="$ac" -v bc="$bc" -v ok="$oka/$okb" 'BEGIN {
        printf "| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %s |\n", c, aw, bw, (aw > 0 ? bw / aw : 0), ac, bc, (ac > 0 ? bc / ac : 0), ok }'
done
