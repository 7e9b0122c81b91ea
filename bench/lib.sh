# shellcheck shell=bash
# Shared by bench/run and bench/download.sh: peers, build, temp dir, nginx, timing one download,
# medians. Source it after `set -euo pipefail` and `cd` to the repo root.
#
# Globals it sets: NGINX (binary), T (temp dir), BASE (nginx URL), NGINX_PORT, BENCH_RES (results).
# Result lines in $BENCH_RES: "case tool run status wall user sys rss_kib served_bytes", status one
#   of ok | FAIL | TIMEOUT | MISMATCH; served_bytes is what nginx sent during the run (from its
#   access log: request bodies, including bytes lost to resets and fetched twice).

bench_log() { echo "bench: $*" >&2; }

# --- peers --------------------------------------------------------------------------------
BENCH_SUDO=()
[ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && BENCH_SUDO=(sudo -n); } || true
_bench_apt_updated=0
bench_apt_install() {
    if [ "$_bench_apt_updated" = 0 ]; then
        "${BENCH_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
        _bench_apt_updated=1
    fi
    "${BENCH_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# bench_install_peers CMD:PACKAGE...  installs the packages whose command is missing, plus
# /usr/bin/time, python3 (free ports) and nginx (nginx-light, falling back to nginx). Sets NGINX.
bench_install_peers() {
    local need=() pair
    for pair in "$@" python3:python3; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
    done
    [ -x /usr/bin/time ] || need+=(time)
    NGINX=${FERRY_NGINX:-}
    if [ -z "$NGINX" ]; then
        if [ -x /usr/sbin/nginx ]; then NGINX=/usr/sbin/nginx; else NGINX=$(command -v nginx || true); fi
    fi
    [ -n "$NGINX" ] || need+=(nginx-light)
    if [ ${#need[@]} -gt 0 ]; then
        bench_log "installing: ${need[*]}"
        bench_apt_install "${need[@]}" || bench_apt_install "${need[@]/nginx-light/nginx}" ||
            bench_log "apt-get failed: the rows of missing tools will say FAIL"
        [ -n "$NGINX" ] || NGINX=/usr/sbin/nginx
    fi
    [ -x "$NGINX" ] || { bench_log "no nginx (set FERRY_NGINX=/path/to/nginx)"; exit 1; }
    [ -x /usr/bin/time ] || { bench_log "no /usr/bin/time (apt-get install time)"; exit 1; }
}

# First line of a tool's --version, or "NAME (missing)".
bench_version() { # bench_version NAME CMD...
    local name=$1 v; shift
    v=$("$@" 2>&1 </dev/null | head -1 || true)
    case "$v" in "" | *"not found"* | *"No such file"*) echo "$name (missing)" ;; *) echo "$v" ;; esac
}

# --- temp dir and processes stopped at exit -------------------------------------------------
BENCH_PIDS=()     # servers to stop by PID at exit
BENCH_CUR=        # the /usr/bin/time of the download running now
bench_cleanup() {
    local pid
    if [ -n "$BENCH_CUR" ] && kill -0 "$BENCH_CUR" 2>/dev/null; then
        # timeout runs in its own process group: stop it (it passes the signal to the tool).
        for pid in $(pgrep -P "$BENCH_CUR" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
        wait "$BENCH_CUR" 2>/dev/null || true
    fi
    for pid in "${BENCH_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    BENCH_PIDS=()
    if [ -n "${T:-}" ] && [ -d "$T" ]; then
        if [ -n "${KEEP:-}" ]; then bench_log "kept $T"; else rm -rf "$T"; fi
    fi
}
bench_tmpdir() {
    T=$(mktemp -d /tmp/ferry-bench.XXXXXX)
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$T/root" "$T/out" "$T/logs"
    BENCH_RES="$T/results"
    : >"$BENCH_RES"
}

bench_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# bench_random_file PATH MIB
bench_random_file() { head -c "$(($2 << 20))" /dev/urandom >"$1"; }

# --- nginx ----------------------------------------------------------------------------------
# bench_start_nginx ROOT [LOCATIONS]: one foreground nginx process on 127.0.0.1 serving ROOT at /,
# config, logs and pid file in $T/nginx; LOCATIONS is extra config inside the server block.
# Sets NGINX_PORT, BASE, NGINX_PID (also stopped at exit).
bench_start_nginx() {
    local root=$1 extra=${2:-} n="$T/nginx"
    mkdir -p "$n"/{client_body,proxy,fastcgi,uwsgi,scgi}
    NGINX_PORT=$(bench_free_port)
    cat >"$n/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 4096; }
http {
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000;
    client_body_temp_path $n/client_body;
    proxy_temp_path $n/proxy;
    fastcgi_temp_path $n/fastcgi;
    uwsgi_temp_path $n/uwsgi;
    scgi_temp_path $n/scgi;
    log_format bench '\$request_method \$uri \$status \$body_bytes_sent "\$http_range"';
    access_log $n/access.log bench;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $root;
        location / { }
$extra
    }
}
CONF
    "$NGINX" -p "$n" -c "$n/nginx.conf" -e "$n/error.log" </dev/null >"$n/stderr.log" 2>&1 &
    NGINX_PID=$!
    BENCH_PIDS+=("$NGINX_PID")
    BASE="http://127.0.0.1:$NGINX_PORT"
    BENCH_ACCESS_LOG="$n/access.log"
    local _
    for _ in $(seq 200); do
        curl -s -o /dev/null "$BASE/" && break
        kill -0 "$NGINX_PID" 2>/dev/null || { cat "$n/stderr.log" "$n/error.log" >&2; bench_log "nginx failed"; exit 1; }
        sleep 0.05
    done
    curl -s -o /dev/null "$BASE/" || { bench_log "nginx does not answer on $BASE"; exit 1; }
    bench_log "nginx pid $NGINX_PID on $BASE"
}

# --- one measured download ------------------------------------------------------------------
# bench_run CASE TOOL RUN VERIFY CMDLINE
#   Empties $T/out, runs CMDLINE there (split on blanks, no globbing; %OUT% is $T/out) under
#   /usr/bin/time and `timeout -k 10 $TIMEOUT`, then calls the shell function VERIFY (it returns 0
#   when the output is byte-identical to the source). Appends a result line to $BENCH_RES and
#   returns 0 (ok) or 1 (anything else). The tool's output goes to $T/logs/CASE.TOOL.RUN.log.
bench_run() {
    local case=$1 tool=$2 run=$3 verify=$4 cmdline=$5
    local -a argv
    read -r -a argv <<<"${cmdline//%OUT%/$T/out}"
    rm -rf "$T/out" && mkdir -p "$T/out"   # previous output and .part/.ferry/.aria2/.st leftovers
    local logf="$T/logs/$case.$tool.$run.log" rc=0 status=ok log0=0
    rm -f "$T/time"
    [ -z "${BENCH_ACCESS_LOG:-}" ] || log0=$(wc -l <"$BENCH_ACCESS_LOG")
    (cd "$T/out" && exec /usr/bin/time -f '%e %U %S %M' -o "$T/time" \
        timeout -k 10 "${TIMEOUT:-600}" "${argv[@]}" </dev/null >"$logf" 2>&1) &
    BENCH_CUR=$!
    wait "$BENCH_CUR" || rc=$?
    BENCH_CUR=
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        status=TIMEOUT
        bench_log "TIMEOUT: $tool ($case, run $run) after ${TIMEOUT:-600} s"
    elif [ "$rc" != 0 ]; then
        status=FAIL
        bench_log "FAIL: $tool ($case, run $run) exited $rc: $(tail -c 300 "$logf" | tr '\n' ' ')"
    elif ! "$verify"; then
        status=MISMATCH
        bench_log "!!!!!!!! MISMATCH: $tool ($case, run $run) wrote output that differs from the source !!!!!!!!"
        find "$T/out" -maxdepth 1 -printf "%s %p\n" | head -20 >&2
    fi
    local served=0
    if [ -n "${BENCH_ACCESS_LOG:-}" ]; then
        sleep 0.1   # nginx logs a request when it notices the connection is gone
        served=$(tail -n +"$((log0 + 1))" "$BENCH_ACCESS_LOG" | awk '{s+=$4} END {printf "%d", s}')
    fi
    local t=""
    [ -f "$T/time" ] && t=$(tail -1 "$T/time")
    # shellcheck disable=SC2086
    set -- $t
    if [ $# -ne 4 ]; then set -- 0 0 0 0; fi
    echo "$case $tool $run $status $1 $2 $3 $4 $served" >>"$BENCH_RES"
    bench_log "$(printf '%-6s %-12s run %s/%s: %-8s %7ss wall  cpu %ss+%ss  rss %s KiB  served %s MiB' \
        "$case" "$tool" "$run" "${RUNS:-?}" "$status" "$1" "$2" "$3" "$4" "$((served >> 20))")"
    [ "$status" = ok ]
}

# --- noise and process accounting -----------------------------------------------------------
# bench_sample_noise: called at the start of each measured run; counts the runs
# (BENCH_SAMPLES), those that started while other people's compilers ran on the same cores
# (BENCH_BUSY), and the highest 1-minute load average seen (BENCH_LOAD_MAX).
BENCH_BUSY=0
BENCH_SAMPLES=0
BENCH_LOAD_MAX=0
bench_sample_noise() {
    local n load
    n=$(pgrep -c -x 'rustc|cc1|cc1plus|ld|ld.lld|mold' 2>/dev/null || true)
    [ "${n:-0}" = 0 ] || BENCH_BUSY=$((BENCH_BUSY + 1))
    BENCH_SAMPLES=$((BENCH_SAMPLES + 1))
    load=$(cut -d' ' -f1 /proc/loadavg)
    BENCH_LOAD_MAX=$(awk -v a="$BENCH_LOAD_MAX" -v b="$load" 'BEGIN {print (b>a ? b : a)}')
}
# bench_proc_ticks PID...: CPU time (user+sys, clock ticks; BENCH_TICKS per second) of the PIDs,
# from /proc (0 for a PID that is gone).
BENCH_TICKS=$(getconf CLK_TCK)
bench_proc_ticks() {
    local p s=0 t
    for p in "$@"; do
        t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
        s=$((s + t))
    done
    echo "$s"
}
# bench_proc_hwm PID: peak RSS in KiB, from /proc.
bench_proc_hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# --- statistics -----------------------------------------------------------------------------
bench_median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# bench_stats CASE TOOL -> "OK TOTAL FAILS WALL CPU RSS_MIB SERVED_MIB"
#   OK/TOTAL runs; FAILS like "1xTIMEOUT,2xFAIL" or "-"; WALL, CPU (user+sys), RSS, SERVED: medians
#   over the successful runs ("-" when none succeeded; SERVED then over all runs).
bench_stats() {
    local case=$1 tool=$2 ok total fails wall=- cpu=- rss=- served
    total=$(awk -v c="$case" -v t="$tool" '$1==c && $2==t' "$BENCH_RES" | wc -l)
    ok=$(awk -v c="$case" -v t="$tool" '$1==c && $2==t && $4=="ok"' "$BENCH_RES" | wc -l)
    fails=$(awk -v c="$case" -v t="$tool" '$1==c && $2==t && $4!="ok" {print $4}' "$BENCH_RES" |
        sort | uniq -c | awk '{printf "%s%sx%s", (NR>1?",":""), $1, $2}')
    [ -n "$fails" ] || fails=-
    if [ "$ok" -gt 0 ]; then
        wall=$(awk -v c="$case" -v t="$tool" '$1==c && $2==t && $4=="ok" {print $5}' "$BENCH_RES" | bench_median)
        cpu=$(awk -v c="$case" -v t="$tool" '$1==c && $2==t && $4=="ok" {print $6+$7}' "$BENCH_RES" | bench_median)
        rss=$(awk -v c="$case" -v t="$tool" '$1==c && $2==t && $4=="ok" {print $8/1024}' "$BENCH_RES" | bench_median)
        served=$(awk -v c="$case" -v t="$tool" '$1==c && $2==t && $4=="ok" {print $9/1048576}' "$BENCH_RES" | bench_median)
    else
        served=$(awk -v c="$case" -v t="$tool" '$1==c && $2==t {print $9/1048576}' "$BENCH_RES" | bench_median)
    fi
    echo "$ok $total $fails $wall $cpu $rss $served"
}
