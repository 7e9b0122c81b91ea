#!/usr/bin/env bash
# bench/p2p.sh: `ferry send` / `ferry recv` on loopback, in the same run as its baselines.
#
#   bench/p2p.sh                     # from anywhere in the repo; 1 GiB + 256 MiB, 3 runs per row
#   QUICK=1 bench/p2p.sh             # smoke run: 64 MiB + 64 MiB, 1 run
#   RUNS=5 P2P_RATE=20M bench/p2p.sh
#   CASES="p2p p2p-multi" bench/run  # the same, as the `p2p` and `p2p-multi` cases of bench/run
#
# Cases (ids for CASES=) and rows (every output compared with its source by cmp):
#   p2p        P2P_MIB (1024) MiB of random bytes, unthrottled:
#                get     ferry get -x 8 from nginx (the baseline: plain HTTP, sendfile)
#                recv    ferry recv -x 8 from one `ferry send` (TLS, per-piece BLAKE3)
#              ratio: recv speed / get speed. Also the sender's hashing time: from starting
#              `ferry send` to its ticket line (once, when the sender starts).
#   p2p-multi  P2P_MULTI_MIB (256) MiB, two copies in two directories shared by two `ferry send`
#              processes, each --limit-rate P2P_RATE (40M):
#                recv-1  ferry recv -x 8 with sender A's ticket
#                recv-2  ferry recv -x 8 with both tickets (A and B)
#              ratio: two-sender speed / one-sender speed (issue 5: "clearly faster").
# Senders are started once per case (before the runs) and stopped by PID at the end; their
# "stopped after serving N bytes" lines give the bytes each one served over the whole run.
#
# Environment:
#   RUNS            runs per row, interleaved; the table shows medians (default 3)
#   P2P_MIB         size of the unthrottled file in MiB (default 1024)
#   P2P_MULTI_MIB   size of the two-sender file in MiB (default 256)
#   P2P_RATE        each sender's --limit-rate in p2p-multi (default 40M)
#   P2P_X           connections for get and recv (default 8, ferry's default)
#   CASES           which cases to run (default "p2p p2p-multi")
#   TIMEOUT         seconds before one download is killed, and the most a sender may take to
#                   print its ticket (default 300)
#   QUICK=1         P2P_MIB=64 P2P_MULTI_MIB=64 RUNS=1 TIMEOUT=60 unless set
#   NO_BUILD=1      skip `cargo build --release -p ferry`
#   FERRY_BIN       ferry binary (default target/release/ferry; copied into the temp dir)
#   FERRY_NGINX     nginx binary
#   KEEP=1          keep the temp dir (files, outputs, per-run logs, sender and nginx logs)
#   BENCH_EMBEDDED=1  print only the report body (no title or machine lines): bench/run puts it
#                   under its "Peer to peer" heading
#
# Installs what is missing with apt-get (curl, time, python3, nginx-light|nginx). The report
# (markdown) goes to stdout, progress and per-run lines to stderr. A failed or timed-out run is a
# row, never the end of the run. Exit status 1 when a run failed or an output differed from its
# source (after the whole table).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh
log() { bench_log "p2p: $*"; }

if [ -n "${QUICK:-}" ]; then
    : "${P2P_MIB:=64}" "${P2P_MULTI_MIB:=64}" "${RUNS:=1}" "${TIMEOUT:=60}"
fi
RUNS=${RUNS:-3}
P2P_MIB=${P2P_MIB:-1024}
P2P_MULTI_MIB=${P2P_MULTI_MIB:-256}
P2P_RATE=${P2P_RATE:-40M}
P2P_X=${P2P_X:-8}
TIMEOUT=${TIMEOUT:-300}
CASES=${CASES:-p2p p2p-multi}
FERRY_SRC=${FERRY_BIN:-$REPO/target/release/ferry}
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
T0=$(date +%s)

ACTIVE=()
for c in $CASES; do
    case $c in
        p2p | p2p-multi) ACTIVE+=("$c") ;;
        *) log "unknown case '$c' (p2p p2p-multi)"; exit 2 ;;
    esac
done
has_case() { [[ " ${ACTIVE[*]} " == *" $1 "* ]]; }

# --- peers and ferry ------------------------------------------------------------------------
bench_install_peers curl:curl
if [ -z "${NO_BUILD:-}" ]; then
    log "cargo build --release -p ferry"
    cargo build --release -p ferry >&2 || log "BUILD FAILED: ferry rows will say FAIL"
fi

bench_tmpdir
mkdir -p "$T/bin" "$T/multi-a" "$T/multi-b"
# A copy: another engineer's build must not swap the binary in the middle of the run.
FERRY="$T/bin/ferry"
cp "$FERRY_SRC" "$FERRY" 2>/dev/null || { log "no ferry binary at $FERRY_SRC"; printf '#!/bin/sh\nexit 127\n' >"$FERRY"; chmod +x "$FERRY"; }
FERRY_VERSION=$(bench_version ferry "$FERRY" --version)
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] || GIT_REV="$GIT_REV + uncommitted changes"

# --- files ----------------------------------------------------------------------------------
if has_case p2p; then
    log "creating the ${P2P_MIB} MiB file"
    bench_random_file "$T/root/p2p.bin" "$P2P_MIB"
fi
if has_case p2p-multi; then
    log "creating the ${P2P_MULTI_MIB} MiB file, two copies"
    bench_random_file "$T/multi-a/multi.bin" "$P2P_MULTI_MIB"
    cp "$T/multi-a/multi.bin" "$T/multi-b/multi.bin"   # a copy, not a link: two senders' own files
fi
# Write the new files out now, not during the first timed runs.
find "$T/root" "$T/multi-a" "$T/multi-b" -type f -exec sync {} +

# --- servers --------------------------------------------------------------------------------
NGINX_PID=
has_case p2p && bench_start_nginx "$T/root"

declare -A TICKET SPID HASH_S HASH_SAID SERVED SEND_HWM
# start_sender NAME PATH [SEND OPTIONS...]: `ferry send PATH --listen 127.0.0.1:0 OPTIONS`,
# waits (up to TIMEOUT s) for its ticket line. Sets TICKET, SPID, HASH_S (seconds from start to
# the ticket line) and HASH_SAID (its own "hashed in" figure). When it fails, the ticket is a
# placeholder and the rows that use it say FAIL.
start_sender() {
    local name=$1 path=$2; shift 2
    local out="$T/send.$name.out" err="$T/send.$name.err" t0 t1 pid deadline
    t0=$EPOCHREALTIME
    "$FERRY" send "$path" --listen 127.0.0.1:0 "$@" </dev/null >"$out" 2>"$err" &
    pid=$!
    BENCH_PIDS+=("$pid")
    SPID[$name]=$pid
    TICKET[$name]=ferry1-sender-$name-did-not-start
    deadline=$((SECONDS + TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if [ "$(wc -l <"$out")" -ge 1 ]; then
            t1=$EPOCHREALTIME
            TICKET[$name]=$(head -1 "$out")
            HASH_S[$name]=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b-a}')
            sleep 0.2   # its summary line follows the ticket
            HASH_SAID[$name]=$(sed -n 's/.*hashed in \([0-9.]*s\).*/\1/p' "$err" | head -1)
            log "sender $name (pid $pid${*:+, $*}): ticket after ${HASH_S[$name]} s (it says: hashed in ${HASH_SAID[$name]:-?}); $(grep -m1 'serving on' "$err" | sed 's/^ferry send: //')"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { log "sender $name exited before its ticket: $(tail -c 500 "$err" | tr '\n' ' ')"; return 1; }
        sleep 0.01
    done
    log "sender $name printed no ticket in $TIMEOUT s: $(tail -c 500 "$err" | tr '\n' ' ')"
    return 1
}
# stop_sender NAME: SIGTERM by PID, wait, read "stopped after serving N bytes" into SERVED.
stop_sender() {
    local name=$1 pid=${SPID[$1]:-} p keep=()
    [ -n "$pid" ] || return 0
    SEND_HWM[$name]=$(bench_proc_hwm "$pid")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${BENCH_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    BENCH_PIDS=("${keep[@]}")
    SERVED[$name]=$(sed -n 's/.*stopped after serving \([0-9]*\) bytes.*/\1/p' "$T/send.$name.err" | tail -1)
    [ -n "${SERVED[$name]}" ] || log "sender $name: no 'stopped after serving' line: $(tail -c 300 "$T/send.$name.err" | tr '\n' ' ')"
}
if has_case p2p; then
    start_sender one "$T/root/p2p.bin" || true
fi
if has_case p2p-multi; then
    start_sender a "$T/multi-a/multi.bin" --limit-rate "$P2P_RATE" || true
    start_sender b "$T/multi-b/multi.bin" --limit-rate "$P2P_RATE" || true
fi

# --- rows -----------------------------------------------------------------------------------
declare -A CASE_NAME CASE_MIB CASE_FILE CASE_ROWS CMD LABEL REF SERVER_PIDS
CASE_NAME[p2p]="${P2P_MIB}MiB"
CASE_MIB[p2p]=$P2P_MIB
CASE_FILE[p2p]=p2p.bin
CASE_ROWS[p2p]="get recv"
CASE_NAME[p2p-multi]="${P2P_MULTI_MIB}MiB, senders @${P2P_RATE}"
CASE_MIB[p2p-multi]=$P2P_MULTI_MIB
CASE_FILE[p2p-multi]=multi.bin
CASE_ROWS[p2p-multi]="recv-1 recv-2"
CMD[p2p:get]="$FERRY get -q -x $P2P_X -o p2p.bin ${BASE:-}/p2p.bin"
CMD[p2p:recv]="$FERRY recv -q -x $P2P_X ${TICKET[one]:-}"
CMD[p2p-multi:recv-1]="$FERRY recv -q -x $P2P_X ${TICKET[a]:-}"
CMD[p2p-multi:recv-2]="$FERRY recv -q -x $P2P_X ${TICKET[a]:-} ${TICKET[b]:-}"
LABEL[p2p:get]="ferry get -x $P2P_X ← nginx"
LABEL[p2p:recv]="ferry recv -x $P2P_X ← 1 ferry send"
LABEL[p2p-multi:recv-1]="ferry recv -x $P2P_X ← 1 sender (A)"
LABEL[p2p-multi:recv-2]="ferry recv -x $P2P_X ← 2 senders (A+B)"
REF[p2p:recv]='get'
REF[p2p-multi:recv-2]=recv-1
SERVER_PIDS[p2p:get]=${NGINX_PID:-}
SERVER_PIDS[p2p:recv]=${SPID[one]:-}
SERVER_PIDS[p2p-multi:recv-1]="${SPID[a]:-} ${SPID[b]:-}"
SERVER_PIDS[p2p-multi:recv-2]="${SPID[a]:-} ${SPID[b]:-}"

# --- verification ---------------------------------------------------------------------------
CUR_CASE=
LEFTOVERS=0   # successful runs that left something beside the file (.part, journal)
same_as_src() {
    local name=${CASE_FILE[$CUR_CASE]} src extra
    if [ "$CUR_CASE" = p2p ]; then src="$T/root/$name"; else src="$T/multi-a/$name"; fi
    cmp -s "$T/out/$name" "$src" || { log "$CUR_CASE: $T/out/$name missing or different"; return 1; }
    extra=$(find "$T/out" -mindepth 1 ! -name "$name" | head -5)
    if [ -n "$extra" ]; then
        LEFTOVERS=$((LEFTOVERS + 1))
        log "$CUR_CASE: left beside the file: $(echo "$extra" | tr '\n' ' ')"
    fi
}
: >"$T/server-cpu"   # "case tool run cpu_seconds" per run

# --- the runs -------------------------------------------------------------------------------
bad=0
for run in $(seq "$RUNS"); do
    for c in "${ACTIVE[@]}"; do
        # Interleaved, and each run starts one row later (run 1: get, recv; run 2: recv, get;
        # ...), so no row always follows the same one.
        read -r -a rows <<<"${CASE_ROWS[$c]}"
        n=${#rows[@]}
        for i in $(seq 0 $((n - 1))); do
            tool=${rows[$(((i + run - 1) % n))]}
            CUR_CASE=$c
            # shellcheck disable=SC2086
            set -- ${SERVER_PIDS[$c:$tool]}
            bench_sample_noise
            before=$(bench_proc_ticks "$@")
            bench_run "$c" "$tool" "$run" same_as_src "${CMD[$c:$tool]}" || bad=1
            after=$(bench_proc_ticks "$@")
            echo "$c $tool $run $(awk -v a="$after" -v b="$before" -v t="$BENCH_TICKS" 'BEGIN {printf "%.2f", (a-b)/t}')" >>"$T/server-cpu"
        done
    done
done
for s in one a b; do stop_sender "$s"; done
ELAPSED=$(($(date +%s) - T0))

# --- report ---------------------------------------------------------------------------------
declare -A MED
for c in "${ACTIVE[@]}"; do
    for tool in ${CASE_ROWS[$c]}; do
        read -r ok _ _ wall _ < <(bench_stats "$c" "$tool")
        [ "$ok" = 0 ] || MED[$c:$tool]=$wall
    done
done
server_cpu() { awk -v c="$1" -v t="$2" '$1==c && $2==t {print $4}' "$T/server-cpu" | bench_median; }
ratio() { # ratio CASE ROW REFROW -> ROW speed / REFROW speed, or n/a
    local r=${MED[$1:$2]:-} p=${MED[$1:$3]:-}
    if [ -n "$r" ] && [ -n "$p" ]; then
        awk -v r="$r" -v p="$p" 'BEGIN {printf "%.2f", (r>0 ? p/r : 0)}'
    else
        echo n/a
    fi
}
speed_of() { # speed_of CASE ROW -> MiB/s of the median, or n/a
    local w=${MED[$1:$2]:-}
    if [ -n "$w" ]; then awk -v m="${CASE_MIB[$1]}" -v w="$w" 'BEGIN {printf "%.0f", (w>0 ? m/w : 0)}'; else echo n/a; fi
}
row() { # row CASE TOOL
    local c=$1 tool=$2 ok total fails wall cpu rss
    read -r ok total fails wall cpu rss _ < <(bench_stats "$c" "$tool")
    local runs="$ok/$total"
    [ "$fails" = - ] || runs="$runs (${fails//x/×})"
    if [ "$ok" = 0 ]; then
        echo "| ${CASE_NAME[$c]} | ${LABEL[$c:$tool]} | $runs | $(echo "$fails" | sed 's/[0-9]*x//g; s:,:/:g') | | | | | | |"
        return
    fi
    local speed vs="" sr="" ref=${REF[$c:$tool]:-}
    speed=$(speed_of "$c" "$tool")
    if [ -n "$ref" ]; then
        vs=${LABEL[$c:$ref]}
        sr=$(ratio "$c" "$tool" "$ref")
        [ "$sr" != n/a ] || sr="$vs failed"
    fi
    printf '| %s | %s | %s | %.2f | %s | %.2f | %.0f | %.2f | %s | %s |\n' \
        "${CASE_NAME[$c]}" "${LABEL[$c:$tool]}" "$runs" "$wall" "$speed" "$cpu" "$rss" "$(server_cpu "$c" "$tool")" "$vs" "$sr"
}
cmdline() { # the command line as a user would type it
    local s=${CMD[$1:$2]//$FERRY/ferry}
    s=${s//${TICKET[one]:-@@}/TICKET}
    s=${s//${TICKET[a]:-@@}/TICKET_A}
    s=${s//${TICKET[b]:-@@}/TICKET_B}
    echo "${s//${BASE:-@@}/URL}"
}
mib() { awk -v b="${1:-0}" 'BEGIN {printf "%.0f", b/1048576}'; }
runs_of() { awk -v c="$1" -v t="$2" '$1==c && $2==t' "$BENCH_RES" | wc -l; }
ok_runs_of() { awk -v c="$1" -v t="$2" '$1==c && $2==t && $4=="ok"' "$BENCH_RES" | wc -l; }

report() {
    if [ -z "${BENCH_EMBEDDED:-}" ]; then
        echo "# ferry peer-to-peer benchmark"
        echo
        echo "Generated by \`bench/p2p.sh\` (see \`bench/README.md\`). One machine, loopback, senders and"
        echo "nginx in the same run; timing is reported here and never decides whether a test passes."
        echo
        echo "- date: $STARTED; whole run ${ELAPSED} s"
        echo "- machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr)"
    fi
    echo "- ferry: $FERRY_VERSION (git $GIT_REV); senders \`ferry send FILE --listen 127.0.0.1:0\` (TLS, token, BLAKE3 per piece), receivers \`ferry recv -q -x $P2P_X\`${NGINX_PID:+; baseline \`ferry get -q -x $P2P_X\` from nginx $("$NGINX" -v 2>&1 | sed 's:.*/::') on 127.0.0.1 (one process, sendfile, plain HTTP)}"
    echo "- files: random bytes under $(df -T /tmp | awk 'NR==2 {print $2}') in /tmp, read from the page cache; $RUNS run(s) per row, interleaved (each run starts one row later), median shown; every output compared with cmp"
    echo "- noise: compilers (rustc, cc, ld) of other users were running at the start of $BENCH_BUSY of $BENCH_SAMPLES runs; highest 1-minute load average $BENCH_LOAD_MAX"
    echo
    echo "| case | row | runs ok | median wall s | MiB/s | CPU s (user+sys) | peak RSS MiB | server CPU s | vs | speed / vs speed |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---|---:|"
    for c in "${ACTIVE[@]}"; do
        for tool in ${CASE_ROWS[$c]}; do row "$c" "$tool"; done
    done
    echo
    echo "Wall time, CPU and peak RSS are the receiving client's (\`/usr/bin/time\`); \"server CPU s\" is the"
    echo "user+sys time of nginx or of the sender(s) during that run (from /proc). \"speed / vs speed\" > 1"
    echo "means the row was faster than the row named under \"vs\" (ratio of the medians)."
    echo
    echo "Command lines (run in an empty directory; URL is nginx, TICKET the first line of \`ferry send\`):"
    echo
    echo '```'
    for c in "${ACTIVE[@]}"; do
        for tool in ${CASE_ROWS[$c]}; do printf '%-10s %s\n' "$c" "$(cmdline "$c" "$tool")"; done
    done
    for s in one a b; do
        [ -n "${SPID[$s]:-}" ] || continue
        if [ "$s" = one ]; then
            echo "sender     ferry send p2p.bin --listen 127.0.0.1:0"
        else
            echo "sender $s   ferry send multi-$s/multi.bin --listen 127.0.0.1:0 --limit-rate $P2P_RATE"
        fi
    done
    echo '```'
    echo
    if has_case p2p; then
        local hs=${HASH_S[one]:-}
        echo "- unthrottled ${CASE_NAME[p2p]}: ferry recv speed / ferry get (nginx) speed = $(ratio p2p recv get)"
        echo "  ($(speed_of p2p recv) vs $(speed_of p2p get) MiB/s, both -x $P2P_X)"
        if [ -n "$hs" ]; then
            echo "- sender start-up on ${P2P_MIB} MiB: ticket line after $hs s ($(awk -v m="$P2P_MIB" -v s="$hs" 'BEGIN {printf "%.0f", (s>0 ? m/s : 0)}') MiB/s; the sender's own \"hashed in\": ${HASH_SAID[one]:-?}); measured once, before the runs"
        else
            echo "- sender start-up on ${P2P_MIB} MiB: **no ticket** (see the log)"
        fi
        local n; n=$(runs_of p2p recv)
        if [ -n "${SERVED[one]:-}" ] && [ "$n" -gt 0 ]; then
            echo "- the sender served $(mib "${SERVED[one]}") MiB over $n receive(s) of ${P2P_MIB} MiB ($(awk -v s="${SERVED[one]}" -v n="$n" -v m="$P2P_MIB" 'BEGIN {printf "%.3f", s/(n*m*1048576)}') × the file per receive); peak RSS $(( ${SEND_HWM[one]:-0} / 1024 )) MiB"
        fi
    fi
    if has_case p2p-multi; then
        echo "- ${CASE_NAME[p2p-multi]}: two-sender speed / one-sender speed = $(ratio p2p-multi recv-2 recv-1) (ideal 2.00; issue 5: \"clearly faster\")"
        echo "  ($(speed_of p2p-multi recv-2) vs $(speed_of p2p-multi recv-1) MiB/s; each sender capped at --limit-rate $P2P_RATE)"
        local n1 n2
        n1=$(runs_of p2p-multi recv-1)
        n2=$(runs_of p2p-multi recv-2)
        if [ -n "${SERVED[a]:-}" ] && [ -n "${SERVED[b]:-}" ]; then
            echo "- bytes served over the whole run: sender A $(mib "${SERVED[a]}") MiB ($n1 one-sender receive(s) plus its part of the two-sender ones), sender B $(mib "${SERVED[b]}") MiB"
            if [ "$n2" -gt 0 ]; then
                echo "  (B's part of the $n2 two-sender receive(s) of ${P2P_MULTI_MIB} MiB: $(awk -v s="${SERVED[b]}" -v n="$n2" -v m="$P2P_MULTI_MIB" 'BEGIN {printf "%.0f %%", 100*s/(n*m*1048576)}'));" \
                    "peak RSS A $(( ${SEND_HWM[a]:-0} / 1024 )) MiB, B $(( ${SEND_HWM[b]:-0} / 1024 )) MiB; ticket after ${HASH_S[a]:-?} s and ${HASH_S[b]:-?} s"
            fi
        fi
    fi
    if [ "$LEFTOVERS" != 0 ]; then
        echo "- note: $LEFTOVERS successful run(s) left files beside the output (see the log)"
    fi
}

report >"$T/report.md"
cat "$T/report.md"
if [ "$bad" != 0 ]; then
    log "a run failed or an output differed from its source (see above)"
    for s in one a b; do
        [ ! -s "$T/send.$s.err" ] || log "sender $s stderr (tail): $(tail -c 800 "$T/send.$s.err")"
    done
    exit 1
fi
