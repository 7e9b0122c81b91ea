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
#   TIMEOUT    seconds before one download is killed and counted as FAIL (default 600)
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

log() { echo "bench: $*" >&2; }

# --- peers --------------------------------------------------------------------------------
SUDO=()
[ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && SUDO=(sudo -n); }
apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}
NGINX=${FERRY_NGINX:-}
[ -n "$NGINX" ] || { [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx; } || NGINX=$(command -v nginx || true)
need=()
command -v aria2c >/dev/null 2>&1 || need+=(aria2)
command -v axel >/dev/null 2>&1 || need+=(axel)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
[ -x /usr/bin/time ] || need+=(time)
[ -n "$NGINX" ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
    log "installing: ${need[*]}"
    if ! apt_install "${need[@]}"; then
        apt_install "${need[@]/nginx-light/nginx}"
    fi
    [ -n "$NGINX" ] || NGINX=/usr/sbin/nginx
fi

# --- ferry --------------------------------------------------------------------------------
if [ -z "${NO_BUILD:-}" ]; then
    log "cargo build --release -p ferry"
    cargo build --release -p ferry >&2 || log "BUILD FAILED: ferry rows will show FAIL"
fi
FERRY_VERSION=$("$FERRY_BIN" --version 2>/dev/null | head -1 || true)
[ -n "$FERRY_VERSION" ] || FERRY_VERSION="(not working: $FERRY_BIN)"

# --- temp dir, test files, nginx ----------------------------------------------------------
T=$(mktemp -d /tmp/ferry-bench.XXXXXX)
NGINX_PID=
cleanup() {
    if [ -n "$NGINX_PID" ]; then
        kill "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
    fi
    if [ -n "${KEEP:-}" ]; then log "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$T/root" "$T/out" "$T/nginx"/{client_body,proxy,fastcgi,uwsgi,scgi}
log "creating test files in $T/root (${BIG_MIB} MiB, ${SMALL_MIB} MiB, random)"
head -c "$((BIG_MIB << 20))" /dev/urandom >"$T/root/big.bin"
head -c "$((SMALL_MIB << 20))" /dev/urandom >"$T/root/small.bin"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
N="$T/nginx"
cat >"$N/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $N/nginx.pid;
error_log $N/error.log warn;
events { worker_connections 1024; }
http {
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    client_body_temp_path $N/client_body;
    proxy_temp_path $N/proxy;
    fastcgi_temp_path $N/fastcgi;
    uwsgi_temp_path $N/uwsgi;
    scgi_temp_path $N/scgi;
    log_format bench '\$request_method \$uri \$status \$body_bytes_sent "\$http_range"';
    access_log $N/access.log bench;
    server {
        listen 127.0.0.1:$PORT;
        root $T/root;
        location / { }
        location /slow/ { alias $T/root/; limit_rate $RATE; }
    }
}
CONF
"$NGINX" -p "$N" -c "$N/nginx.conf" -e "$N/error.log" </dev/null >"$N/stderr.log" 2>&1 &
NGINX_PID=$!
for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$N/stderr.log" "$N/error.log" >&2; log "nginx failed"; exit 1; }
    sleep 0.05
done
curl -s -o /dev/null "http://127.0.0.1:$PORT/" || { log "nginx does not answer on $PORT"; exit 1; }
BASE="http://127.0.0.1:$PORT"
log "nginx pid $NGINX_PID on $BASE (limit_rate $RATE on /slow/)"

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
RES="$T/results"   # lines: case tool run status wall user sys rss_kib
: >"$RES"
bad=0

run_one() { # run_one CASE TOOL URL SRC RUN
    local case=$1 tool=$2 url=$3 src=$4 run=$5
    local cmd=${CMD[$tool]//%URL%/$url}
    rm -rf "$T/out" && mkdir -p "$T/out"   # previous output and .part/.ferry/.aria2/.st leftovers
    local status=ok rc=0
    (cd "$T/out" && /usr/bin/time -f '%e %U %S %M' -o "$T/time" timeout -k 10 "$TIMEOUT" $cmd \
        </dev/null >"$T/tool.log" 2>&1) || rc=$?
    if [ "$rc" != 0 ]; then
        status=FAIL
        log "FAIL: $tool ($case, run $run) exited $rc: $(tail -c 300 "$T/tool.log" | tr '\n' ' ')"
    elif ! cmp -s "$T/out/out" "$src"; then
        status=MISMATCH
        log "!!!!!!!! MISMATCH: $tool ($case, run $run) wrote a file that differs from the source !!!!!!!!"
        ls -l "$T/out" >&2
    fi
    [ "$status" = ok ] || bad=1
    local t; t=$(tail -1 "$T/time")
    # shellcheck disable=SC2086
    set -- $t
    if [ $# -ne 4 ]; then set -- 0 0 0 0; fi
    echo "$case $tool $run $status $1 $2 $3 $4" >>"$RES"
    log "$(printf '%-8s %-12s run %s/%s: %-8s %7ss wall  cpu %ss+%ss  rss %s KiB' \
        "$case" "$tool" "$run" "$RUNS" "$status" "$1" "$2" "$3" "$4")"
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
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
declare -A MED_WALL
row_stats() { # row_stats CASE TOOL -> "status wall cpu rss_mib"
    local case=$1 tool=$2 fails
    fails=$(awk -v c="$case" -v t="$tool" '$1==c && $2==t && $4!="ok"' "$RES" | wc -l)
    if [ "$fails" != 0 ]; then
        local what; what=$(awk -v c="$case" -v t="$tool" '$1==c && $2==t && $4!="ok" {print $4}' "$RES" | sort -u | tr '\n' '/' | sed 's:/$::')
        echo "$what - - -"
        return
    fi
    local wall cpu rss
    wall=$(awk -v c="$case" -v t="$tool" '$1==c && $2==t {print $5}' "$RES" | median)
    cpu=$(awk -v c="$case" -v t="$tool" '$1==c && $2==t {print $6+$7}' "$RES" | median)
    rss=$(awk -v c="$case" -v t="$tool" '$1==c && $2==t {print $8/1024}' "$RES" | median)
    echo "ok $wall $cpu $rss"
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
