#!/usr/bin/env bash
# ferry get vs curl, aria2c and axel on loopback, in the same run, against one nginx.
#
#   bench/download.sh                 # from the repo root; RUNS=3 by default
#   RUNS=5 bench/download.sh
#   RUNS=1 BIG_MIB=256 SMALL_MIB=64 bench/download.sh   # quick smoke run
#
# Environment:
#   RUNS       runs per tool and case; the table shows the median (default 3)
#   BIG_MIB    size of the unthrottled file in MiB (default 1024)
#   SMALL_MIB  size of the throttled file in MiB (default 256)
#   RATE       nginx limit_rate per connection for the throttled case (default 20m = 20 MiB/s)
#   TIMEOUT    seconds before one download is killed and counted as TIMEOUT (default 600)
#   FERRY_BIN  ferry binary to use (default: target/release/ferry, built by this script)
#   NO_BUILD=1 skip `cargo build --release -p ferry`
#   KEEP=1     keep the temp dir (files, outputs, nginx logs) at the end
#
# Installs missing peers with apt-get (aria2, axel, curl, nginx-light|nginx, time).
# Every download is checked with cmp against its source; a mismatch is reported loudly.
# Exit status: 0 if every download succeeded and matched, 1 otherwise (after the full table).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
RUNS=${RUNS:-3}
BIG_MIB=${BIG_MIB:-1024}
SMALL_MIB=${SMALL_MIB:-256}
RATE=${RATE:-20m}
TIMEOUT=${TIMEOUT:-600}
FERRY_BIN=${FERRY_BIN:-$REPO/target/release/ferry}

# shellcheck source=bench/lib.sh
. bench/lib.sh
log() { bench_log "$@"; }

bench_install_peers aria2c:aria2 axel:axel curl:curl

# --- ferry --------------------------------------------------------------------------------
if [ -z "${NO_BUILD:-}" ]; then
    log "cargo build --release -p ferry"
    cargo build --release -p ferry >&2 || log "BUILD FAILED: ferry rows will show FAIL"
fi
FERRY_VERSION=$("$FERRY_BIN" --version 2>/dev/null | head -1 || true)
[ -n "$FERRY_VERSION" ] || FERRY_VERSION="(not working: $FERRY_BIN)"

# --- temp dir, test files, nginx ----------------------------------------------------------
bench_tmpdir
log "creating test files in $T/root (${BIG_MIB} MiB, ${SMALL_MIB} MiB, random)"
bench_random_file "$T/root/big.bin" "$BIG_MIB"
bench_random_file "$T/root/small.bin" "$SMALL_MIB"
bench_start_nginx "$T/root" "        location /slow/ { alias $T/root/; limit_rate $RATE; }"
log "limit_rate $RATE on /slow/"

# --- running one download -----------------------------------------------------------------
# tool command lines; "%URL%" is replaced, output name is always "out" in $T/out.
declare -A CMD=(
    [curl]='curl -s -o out %URL%'
    [ferry-x1]="$FERRY_BIN get -q -x 1 -o out %URL%"
    [ferry-x4]="$FERRY_BIN get -q -x 4 -o out %URL%"
    [ferry-x8]="$FERRY_BIN get -q -x 8 -o out %URL%"
    [ferry-x16]="$FERRY_BIN get -q -x 16 -o out %URL%"
    [aria2c-x16]='aria2c -x16 -s16 -k1M --allow-overwrite=true --file-allocation=none -q -d . -o out %URL%'
    [axel-n16]='axel -q -n16 -o out %URL%'
)
declare -A LABEL=(
    [curl]='curl' [ferry-x1]='ferry -x 1' [ferry-x4]='ferry -x 4' [ferry-x8]='ferry -x 8'
    [ferry-x16]='ferry -x 16' [aria2c-x16]='aria2c -x16 -s16' [axel-n16]='axel -n16'
)
bad=0
SRC=
same_as_src() { cmp -s "$T/out/out" "$SRC"; }

run_one() { # run_one CASE TOOL URL SRC RUN
    local case=$1 tool=$2 url=$3 run=$5
    SRC=$4
    bench_run "$case" "$tool" "$run" same_as_src "${CMD[$tool]//%URL%/$url}" || bad=1
}

FERRY_TOOLS=(ferry-x1 ferry-x4 ferry-x8 ferry-x16)
BIG_TOOLS=(curl "${FERRY_TOOLS[@]}" aria2c-x16 axel-n16)
SMALL_TOOLS=(curl ferry-x16 aria2c-x16 axel-n16)
BIG_CASE="${BIG_MIB}MiB"
SMALL_CASE="${SMALL_MIB}MiB@${RATE}"

# Runs are interleaved (run 1 of every tool, then run 2, ...) so drift hits all tools alike.
for run in $(seq "$RUNS"); do
    for tool in "${BIG_TOOLS[@]}"; do
        run_one "$BIG_CASE" "$tool" "$BASE/big.bin" "$T/root/big.bin" "$run"
    done
    for tool in "${SMALL_TOOLS[@]}"; do
        run_one "$SMALL_CASE" "$tool" "$BASE/slow/small.bin" "$T/root/small.bin" "$run"
    done
done

# --- report -------------------------------------------------------------------------------
declare -A MED_WALL
row_stats() { # row_stats CASE TOOL -> "status wall cpu rss_mib"; any failed run fails the row
    local ok total fails wall cpu rss served
    read -r ok total fails wall cpu rss served < <(bench_stats "$1" "$2")
    if [ "$fails" != - ]; then
        echo "$(echo "$fails" | sed 's/[0-9]*x//g; s:,:/:g') - - -"
    else
        echo "ok $wall $cpu $rss"
    fi
}

# Which ferry row each peer is compared with: same connection count where there is one,
# and ferry's -x 8 against single-stream curl on the unthrottled file (the "match curl" bar).
ref_for() { # ref_for CASE TOOL
    case "$1:$2" in
        "$BIG_CASE:curl") echo ferry-x8 ;;
        *) echo ferry-x16 ;;
    esac
}

echo
echo "## ferry download benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); loopback; nginx $("$NGINX" -v 2>&1 | sed 's:.*/::') (1 process, sendfile)"
echo "- tools: $FERRY_VERSION; $(curl --version | head -1 | cut -d' ' -f1-2); $(aria2c --version | head -1); $(axel --version 2>/dev/null | head -1)"
echo "- runs: $RUNS per tool and case, median shown; every output checked with cmp"
echo "- cases: $BIG_CASE = ${BIG_MIB} MiB unthrottled; $SMALL_CASE = ${SMALL_MIB} MiB with nginx limit_rate $RATE per connection"
echo "- ratios: ferry time / peer time (<1: ferry faster) and ferry speed / peer speed (>1: ferry faster), against the ferry row named"
echo
echo "| tool | case | median wall s | MiB/s | CPU s (user+sys) | peak RSS MiB | vs ferry | ferry/peer time | ferry speedup |"
echo "|---|---|---:|---:|---:|---:|---|---:|---:|"
print_case() { # print_case CASE MIB TOOLS...
    local case=$1 mib=$2; shift 2
    local tool
    for tool in "$@"; do
        read -r st wall cpu rss < <(row_stats "$case" "$tool")
        if [ "$st" = ok ]; then MED_WALL[$case:$tool]=$wall; fi
    done
    for tool in "$@"; do
        read -r st wall cpu rss < <(row_stats "$case" "$tool")
        if [ "$st" != ok ]; then
            echo "| ${LABEL[$tool]} | $case | $st | | | | | | |"
            continue
        fi
        local speed; speed=$(awk -v m="$mib" -v w="$wall" 'BEGIN {printf "%.0f", (w>0 ? m/w : 0)}')
        local vs="" tr="" sr=""
        if [[ $tool != ferry-* ]]; then
            local ref; ref=$(ref_for "$case" "$tool")
            vs=${LABEL[$ref]}
            local fw=${MED_WALL[$case:$ref]:-}
            if [ -n "$fw" ]; then
                tr=$(awk -v f="$fw" -v p="$wall" 'BEGIN {printf "%.2f", (p>0 ? f/p : 0)}')
                sr=$(awk -v f="$fw" -v p="$wall" 'BEGIN {printf "%.2f", (f>0 ? p/f : 0)}')
            else
                tr="FAIL"; sr="FAIL"
            fi
        fi
        printf '| %s | %s | %.2f | %s | %.2f | %.0f | %s | %s | %s |\n' \
            "${LABEL[$tool]}" "$case" "$wall" "$speed" "$cpu" "$rss" "$vs" "$tr" "$sr"
    done
}
print_case "$BIG_CASE" "$BIG_MIB" "${BIG_TOOLS[@]}"
print_case "$SMALL_CASE" "$SMALL_MIB" "${SMALL_TOOLS[@]}"
echo

if [ "$bad" != 0 ]; then
    log "some downloads FAILED or MISMATCHED (see the table and the log above)"
    exit 1
fi
