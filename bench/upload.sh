#!/usr/bin/env bash
# bench/upload.sh: tus uploads on loopback, in the same run: `ferry put` and tus-js-client (the
# reference tus client, in Node) into `ferry serve`, and tus-js-client into @tus/server with its
# FileStore (the Node reference server); same file for every row.
#
#   bench/upload.sh                  # from anywhere in the repo; 1 GiB, 3 runs per row
#   QUICK=1 bench/upload.sh          # smoke run: 64 MiB, 1 run
#   RUNS=5 UPLOAD_MIB=2048 bench/upload.sh
#   CASES=upload bench/run           # the same, as the `upload` case of bench/run
#
# Rows (every run's stored file is compared with its source by cmp):
#   put-x4      ferry put -x 4 (4 partial uploads + concatenation)                   -> ferry serve
#   ferry-p4    tus-js-client parallelUploads: 4 (4 partial uploads + concatenation) -> ferry serve
#   put-x1      ferry put -x 1 (one upload, checksummed chunks)                      -> ferry serve
#   ferry-seq   tus-js-client, one sequential upload (one PATCH)                     -> ferry serve
#   tus-node    tus-js-client, one sequential upload (one PATCH)                     -> @tus/server
#               (@tus/server has no concatenation, so no parallelUploads row for it)
#   ferry-c4    4 tus-js-client processes at once, a quarter of the file each        -> ferry serve
#   tus-c4      the same                                                             -> @tus/server
#               (bench/upload-clients.sh; the wall time is until the last one is done)
# Ratios: tus-js-client into ferry serve vs into @tus/server, one client and 4 at once (issue 3's
# bar); ferry put -x 4 vs tus-js-client parallelUploads 4 (issue 4's bar); ferry put -x 1 vs
# tus-js-client sequential (both into ferry serve).
#
# One client alone on this 2-core VM mostly measures where the scheduler puts Node's threads:
# tus-js-client reads the file in libuv's thread pool and sends from the main thread, and a
# server that leaves the second core idle (ferry serve, 0.7 s CPU per GiB) lets those threads
# spread over both cores and hand each 64 KiB across them, which costs the client more CPU
# than a server that keeps that core busy (@tus/server, 2.5 s per GiB). CLIENT_CPUS=0 takes that
# out (docs/server.md, "The upload speed bar").
#
# Environment:
#   RUNS         runs per row, interleaved; the table shows medians (default 3)
#   UPLOAD_MIB   file size in MiB (default 1024)
#   CHUNK_MIB    when set, also rows with tus-js-client chunkSize CHUNK_MIB MiB into both servers
#   TIMEOUT      seconds before one upload is killed (default 300)
#   QUICK=1      UPLOAD_MIB=64 RUNS=1 TIMEOUT=60 unless set
#   NO_BUILD=1   skip `cargo build --release -p ferry`
#   FERRY_BIN    ferry binary (default target/release/ferry; copied into the temp dir)
#   FERRY_NODE   node binary (default: node from PATH)
#   KEEP=1       keep the temp dir (source file, stored files, client and server logs)
#   UPLOAD_ROWS  which rows, e.g. "put-x4 ferry-p4" (default: all seven)
#   CLIENT_CPUS  when set, every client runs under `taskset -c CLIENT_CPUS` (e.g. 0: the clients
#                on the first core, the servers wherever the scheduler puts them)
#   STORE_DIR    where both servers store uploads (default: inside the temp dir, on disk). A tmpfs
#                (e.g. STORE_DIR=/dev/shm) takes the disk's writeback out of the comparison: the
#                disk of a shared VM is the largest source of run-to-run spread here
#   (ferry put's resume journals go to $T/ferry-data via FERRY_DATA_DIR, emptied before each run)
#   BENCH_EMBEDDED=1  print only the report body (no title or machine lines): bench/run puts it
#                under its "Uploads" heading
#
# Installs what is missing: nodejs, npm, time, python3 (apt-get), and tus-js-client, @tus/server
# and @tus/file-store (`npm ci --prefix tests/peers/node`, from its package-lock.json). The report
# (markdown) goes to stdout, progress and per-run lines to stderr. Exit status 1 when a ferry row
# failed or any stored file differed from its source, or the @tus/server row failed (a broken
# set-up); the whole table is printed first.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh
log() { bench_log "upload: $*"; }

if [ -n "${QUICK:-}" ]; then
    : "${UPLOAD_MIB:=64}" "${RUNS:=1}" "${TIMEOUT:=60}"
fi
RUNS=${RUNS:-3}
UPLOAD_MIB=${UPLOAD_MIB:-1024}
CHUNK_MIB=${CHUNK_MIB:-}
TIMEOUT=${TIMEOUT:-300}
export TIMEOUT
FERRY_SRC=${FERRY_BIN:-$REPO/target/release/ferry}
NODE=${FERRY_NODE:-node}
PEERS="$REPO/tests/peers/node"
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
T0=$(date +%s)

# --- peers and ferry ------------------------------------------------------------------------
need=()
command -v "$NODE" >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v python3 >/dev/null 2>&1 || need+=(python3)   # bench_free_port
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    log "installing: ${need[*]}"
    bench_apt_install "${need[@]}" || { log "apt-get failed; install ${need[*]} yourself"; exit 1; }
fi
# The same stamp as scripts/test.sh: npm ci again only when the lock file or node changed.
stamp="$("$NODE" --version) $(sha256sum "$PEERS/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$PEERS/node_modules/.ferry-stamp" 2>/dev/null)" != "$stamp" ]; then
    log "npm ci --prefix tests/peers/node"
    npm ci --prefix "$PEERS" --no-audit --no-fund >&2
    echo "$stamp" >"$PEERS/node_modules/.ferry-stamp"
fi
pkg_version() { # pkg_version NAME -> version in tests/peers/node/node_modules
    sed -n 's/^  "version": "\(.*\)",$/\1/p' "$PEERS/node_modules/$1/package.json" | head -1
}
TUS_JS_VERSION=$(pkg_version tus-js-client)
# What Node's start-up costs each tus-js-client row (its wall time includes it; ferry put's does
# not have it): median of 3 starts that load tus-js-client and exit.
NODE_START=$(for _ in 1 2 3; do
    (cd "$PEERS" && /usr/bin/time -f '%e' "$NODE" --input-type=module -e "import 'tus-js-client'" 2>&1 >/dev/null | tail -1)
done | bench_median)
TUS_SERVER_VERSION=$(pkg_version @tus/server)
FILE_STORE_VERSION=$(pkg_version @tus/file-store)

if [ -z "${NO_BUILD:-}" ]; then
    log "cargo build --release -p ferry"
    cargo build --release -p ferry >&2 || log "BUILD FAILED: ferry rows will say FAIL"
fi

bench_tmpdir
mkdir -p "$T/bin"
STORE=${STORE_DIR:-$T}
if [ -n "${STORE_DIR:-}" ]; then
    STORE=$(mktemp -d "$STORE_DIR/ferry-bench-store.XXXXXX")
    trap 'rm -rf "$STORE"; bench_cleanup' EXIT
fi
mkdir -p "$STORE/ferry-root" "$STORE/tus-root"
# ferry put's resume journals: never the user's data directory.
export FERRY_DATA_DIR="$T/ferry-data"
# A copy: another engineer's build must not swap the binary in the middle of the run.
FERRY="$T/bin/ferry"
cp "$FERRY_SRC" "$FERRY" 2>/dev/null || { log "no ferry binary at $FERRY_SRC"; printf '#!/bin/sh\nexit 127\n' >"$FERRY"; chmod +x "$FERRY"; }
FERRY_VERSION=$(bench_version ferry "$FERRY" --version)
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] || GIT_REV="$GIT_REV + uncommitted changes"

log "creating the ${UPLOAD_MIB} MiB source file"
SRC_FILE="$T/src.bin"
bench_random_file "$SRC_FILE" "$UPLOAD_MIB"
# What each of the 4 clients of the "at once" rows uploads: a quarter of the file.
NCLIENTS=4
PART_MIB=$((UPLOAD_MIB / NCLIENTS > 0 ? UPLOAD_MIB / NCLIENTS : 1))
PART_FILE="$T/part.bin"
head -c "$((PART_MIB << 20))" "$SRC_FILE" >"$PART_FILE"
sync "$SRC_FILE" "$PART_FILE"

# --- servers --------------------------------------------------------------------------------
# wait_port PORT PID NAME: polls (with a 30 s deadline) until PORT accepts connections; fails
# early when PID is gone.
wait_port() {
    local port=$1 pid=$2 name=$3 deadline=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if (: </dev/tcp/127.0.0.1/"$port") 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { log "$name exited before listening"; return 1; }
        sleep 0.05
    done
    log "$name does not listen on 127.0.0.1:$port after 30 s"
    return 1
}

# Never starting with '-' (it would read as an option).
TOKEN=t$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
FERRY_PID=
FERRY_URL=
start_ferry() {
    local port
    for _ in 1 2 3; do
        port=$(bench_free_port)
        "$FERRY" serve "$STORE/ferry-root" --listen "127.0.0.1:$port" --token "$TOKEN" \
            </dev/null >"$T/ferry-serve.out" 2>"$T/ferry-serve.err" &
        FERRY_PID=$!
        BENCH_PIDS+=("$FERRY_PID")
        if wait_port "$port" "$FERRY_PID" "ferry serve"; then
            FERRY_URL="http://127.0.0.1:$port/uploads/"
            log "ferry serve pid $FERRY_PID on $FERRY_URL"
            return 0
        fi
        kill "$FERRY_PID" 2>/dev/null || true
        log "ferry serve: $(tail -c 500 "$T/ferry-serve.err" | tr '\n' ' ')"
    done
    return 1
}
TUS_PID=
TUS_URL=
start_tus_server() {
    "$NODE" "$PEERS/tus-server.mjs" "$STORE/tus-root" </dev/null >"$T/tus-server.out" 2>"$T/tus-server.err" &
    TUS_PID=$!
    BENCH_PIDS+=("$TUS_PID")
    local deadline=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$deadline" ]; do
        TUS_URL=$(sed -n '1s/^listening on \(http:\/\/[^ ]*\).*/\1/p' "$T/tus-server.out")
        [ -z "$TUS_URL" ] || break
        kill -0 "$TUS_PID" 2>/dev/null || break
        sleep 0.05
    done
    if [ -z "$TUS_URL" ]; then
        log "@tus/server did not start: $(tail -c 500 "$T/tus-server.err" | tr '\n' ' ')"
        return 1
    fi
    log "@tus/server $TUS_SERVER_VERSION pid $TUS_PID on $TUS_URL"
}
start_ferry || { log "ferry serve did not start: its rows will say FAIL"; FERRY_URL="http://127.0.0.1:9/uploads/"; }
start_tus_server || TUS_URL="http://127.0.0.1:9/uploads/"

# --- rows -----------------------------------------------------------------------------------
# Per row: label, the client's options, the server (ferry or tus), the ferry row it is compared
# with. Every upload gets its own metadata filename (ferry serve refuses to overwrite).
# CLIENT: tus (tus-js-client), put (ferry put) or many (bench/upload-clients.sh). REF: the row
# whose client is ferry's side of the comparison (ferry put against tus-js-client; ferry serve
# against @tus/server).
UP="$NODE $PEERS/upload.mjs $SRC_FILE"
# shellcheck disable=SC2206
ROWS=(${UPLOAD_ROWS:-put-x4 ferry-p4 put-x1 ferry-seq tus-node ferry-c4 tus-c4})
declare -A LABEL OPTS SERVER REF CLIENT
# define_row ID LABEL CLIENT_OPTIONS SERVER CLIENT [REF]
define_row() { LABEL[$1]=$2 OPTS[$1]=$3 SERVER[$1]=$4 CLIENT[$1]=$5 REF[$1]=${6:-}; }
define_row put-x4 'ferry put -x 4 → ferry serve' '-x 4' ferry put
define_row ferry-p4 'tus-js-client parallelUploads 4 → ferry serve' '--parallel 4' ferry tus put-x4
define_row put-x1 'ferry put -x 1 → ferry serve' '-x 1' ferry put
define_row ferry-seq 'tus-js-client sequential → ferry serve' '' ferry tus put-x1
define_row tus-node 'tus-js-client sequential → @tus/server' '' tus tus ferry-seq
define_row ferry-c4 "$NCLIENTS tus-js-client at once, ${PART_MIB} MiB each → ferry serve" '' ferry many
define_row tus-c4 "$NCLIENTS tus-js-client at once, ${PART_MIB} MiB each → @tus/server" '' tus many ferry-c4
if [ -n "$CHUNK_MIB" ]; then
    ROWS+=(ferry-chunk tus-chunk)
    define_row ferry-chunk "tus-js-client ${CHUNK_MIB} MiB chunks → ferry serve" "--chunk-size $((CHUNK_MIB << 20))" ferry tus
    define_row tus-chunk "tus-js-client ${CHUNK_MIB} MiB chunks → @tus/server" "--chunk-size $((CHUNK_MIB << 20))" tus tus ferry-chunk
fi
CASE="${UPLOAD_MIB}MiB"

# --- one upload -----------------------------------------------------------------------------
CUR_TOOL=
CUR_RUN=
CUR_NAME=
# The stored files of the current run, one per line as "STORED SOURCE": ferry serve puts an
# upload at DIR/<metadata filename>; @tus/server's FileStore at DIR/<upload id>, the last segment
# of the URL the client printed.
stored_files() {
    local src=$SRC_FILE names=$CUR_NAME
    if [ "${CLIENT[$CUR_TOOL]:-tus}" = many ]; then
        src=$PART_FILE
        names=$(for i in $(seq "$NCLIENTS"); do echo "$CUR_NAME.$i"; done)
    fi
    if [ "${SERVER[$CUR_TOOL]}" = ferry ]; then
        for n in $names; do echo "$STORE/ferry-root/$n $src"; done
    else
        sed -n 's/.*"url":"\([^"]*\)".*/\1/p' "$T/logs/$CASE.$CUR_TOOL.$CUR_RUN.log" |
            while read -r url; do echo "$STORE/tus-root/${url##*/} $src"; done
    fi
}
verify_upload() {
    local want=1 got=0 f src
    [ "${CLIENT[$CUR_TOOL]:-tus}" != many ] || want=$NCLIENTS
    while read -r f src; do
        got=$((got + 1))
        cmp -s "$f" "$src" || { log "$CUR_TOOL run $CUR_RUN: $f missing or different"; return 1; }
    done < <(stored_files)
    [ "$got" = "$want" ] || { log "$CUR_TOOL run $CUR_RUN: $got stored file(s) found, $want expected"; return 1; }
}
: >"$T/server-cpu"   # "tool run cpu_seconds" per upload

JOURNALS_LEFT=0   # successful ferry put runs that left a resume journal behind
bad=0
NROWS=${#ROWS[@]}
for run in $(seq "$RUNS"); do
    # Interleaved, and each run starts one row later (run 1: rows 1..n, run 2: rows 2..n,1, ...),
    # so no row always follows the same one.
    for i in $(seq 0 $((NROWS - 1))); do
        tool=${ROWS[$(((i + run - 1) % NROWS))]}
        CUR_TOOL=$tool CUR_RUN=$run CUR_NAME="$tool.$run.bin"
        if [ "${SERVER[$tool]}" = ferry ]; then
            url=$FERRY_URL pid=$FERRY_PID auth="--token $TOKEN"
        else
            url=$TUS_URL pid=$TUS_PID auth=""
        fi
        case ${CLIENT[$tool]:-tus} in
        put)
            rm -rf "$FERRY_DATA_DIR"   # every run a fresh upload, never a resume
            cmd="$FERRY put -q $auth --name $CUR_NAME ${OPTS[$tool]} $SRC_FILE $url" ;;
        many) cmd="$REPO/bench/upload-clients.sh $NCLIENTS $PART_FILE $url --name $CUR_NAME $auth" ;;
        *) cmd="$UP $url $auth --name $CUR_NAME ${OPTS[$tool]}" ;;
        esac
        [ -z "${CLIENT_CPUS:-}" ] || cmd="taskset -c $CLIENT_CPUS $cmd"
        bench_sample_noise
        before=$(bench_proc_ticks "${pid:-0}")
        if ! bench_run "$CASE" "$tool" "$run" verify_upload "$cmd"; then
            if [ "$(tail -1 "$BENCH_RES" | cut -d' ' -f4)" = MISMATCH ] || [ "${SERVER[$tool]}" = ferry ] || [ "$tool" = tus-node ] || [ "$tool" = tus-c4 ]; then
                bad=1
            fi
        fi
        after=$(bench_proc_ticks "${pid:-0}")
        if [ "${CLIENT[$tool]:-tus}" = put ] && [ "$(tail -1 "$BENCH_RES" | cut -d' ' -f4)" = ok ] &&
            [ -n "$(find "$FERRY_DATA_DIR" -type f 2>/dev/null | head -1)" ]; then
            JOURNALS_LEFT=$((JOURNALS_LEFT + 1))
            log "$tool run $run: resume journal left after a successful upload: $(find "$FERRY_DATA_DIR" -type f | tr '\n' ' ')"
        fi
        echo "$tool $run $(awk -v a="$after" -v b="$before" -v t="$BENCH_TICKS" 'BEGIN {printf "%.2f", (a-b)/t}')" >>"$T/server-cpu"
        # Keep the disk use at one stored copy: the files were compared above.
        while read -r f _; do rm -f "$f" "$f.json"; done < <(stored_files 2>/dev/null || true)
    done
done
FERRY_HWM=$(bench_proc_hwm "${FERRY_PID:-0}")
TUS_HWM=$(bench_proc_hwm "${TUS_PID:-0}")
ELAPSED=$(($(date +%s) - T0))

# --- report ---------------------------------------------------------------------------------
declare -A MED
for tool in "${ROWS[@]}"; do
    read -r ok _ _ wall _ < <(bench_stats "$CASE" "$tool")
    [ "$ok" = 0 ] || MED[$tool]=$wall
done
server_cpu() { # median server CPU s of a row's successful runs
    local tool=$1
    awk -v t="$tool" '$1==t {print $3}' "$T/server-cpu" | bench_median
}
ratio() { # ratio FERRYROW PEERROW -> ferry speed / peer speed, or n/a
    local f=${MED[$1]:-} p=${MED[$2]:-}
    if [ -n "$f" ] && [ -n "$p" ]; then
        awk -v f="$f" -v p="$p" 'BEGIN {printf "%.2f", (f>0 ? p/f : 0)}'
    else
        echo n/a
    fi
}
row() {
    local tool=$1 ok total fails wall cpu rss
    read -r ok total fails wall cpu rss _ < <(bench_stats "$CASE" "$tool")
    local runs="$ok/$total"
    [ "$fails" = - ] || runs="$runs (${fails//x/×})"
    if [ "$ok" = 0 ]; then
        echo "| $CASE | ${LABEL[$tool]} | $runs | $(echo "$fails" | sed 's/[0-9]*x//g; s:,:/:g') | | | | | | | |"
        return
    fi
    local speed vs="" tr="" sr="" ref=${REF[$tool]:-}
    local mib=$UPLOAD_MIB
    [ "${CLIENT[$tool]:-tus}" != many ] || mib=$((NCLIENTS * PART_MIB))
    speed=$(awk -v m="$mib" -v w="$wall" 'BEGIN {printf "%.0f", (w>0 ? m/w : 0)}')
    if [ -n "$ref" ]; then
        vs=${LABEL[$ref]}
        vs=${vs#tus-js-client }
        local fw=${MED[$ref]:-}
        if [ -n "$fw" ]; then
            tr=$(awk -v f="$fw" -v p="$wall" 'BEGIN {printf "%.2f", (p>0 ? f/p : 0)}')
            sr=$(awk -v f="$fw" -v p="$wall" 'BEGIN {printf "%.2f", (f>0 ? p/f : 0)}')
        else
            tr="ferry failed"
        fi
    fi
    printf '| %s | %s | %s | %.2f | %s | %.2f | %.0f | %.2f | %s | %s | %s |\n' \
        "$CASE" "${LABEL[$tool]}" "$runs" "$wall" "$speed" "$cpu" "$rss" "$(server_cpu "$tool")" "$vs" "$tr" "$sr"
}
cmdline() { # the client command line as a user would type it
    local tool=$1 auth=""
    [ "${SERVER[$tool]}" != ferry ] || auth=" --token TOKEN"
    local pin=""
    [ -z "${CLIENT_CPUS:-}" ] || pin="taskset -c $CLIENT_CPUS "
    case ${CLIENT[$tool]:-tus} in
    put) echo "${pin}ferry put -q$auth --name NAME ${OPTS[$tool]} FILE URL" ;;
    many) echo "${pin}bench/upload-clients.sh $NCLIENTS PART URL --name NAME$auth   (PART: the file's first $PART_MIB MiB)" ;;
    *) echo "${pin}node upload.mjs FILE URL$auth --name NAME ${OPTS[$tool]}" | sed 's/ *$//' ;;
    esac
}

report() {
    if [ -z "${BENCH_EMBEDDED:-}" ]; then
        echo "# ferry upload benchmark"
        echo
        echo "Generated by \`bench/upload.sh\` (see \`bench/README.md\`). One machine, loopback, both servers"
        echo "in the same run; timing is reported here and never decides whether a test passes."
        echo
        echo "- date: $STARTED; whole run ${ELAPSED} s"
        echo "- machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr)"
        echo "- ferry: $FERRY_VERSION (git $GIT_REV)"
    fi
    echo "- clients: \`ferry put\` ($FERRY_VERSION, git $GIT_REV; a fresh upload every run, its resume journals in an emptied temp dir) and tus-js-client $TUS_JS_VERSION on Node $("$NODE" --version) (\`tests/peers/node/upload.mjs\`: the file as an fs.ReadStream, no retries)"
    echo "- servers: \`ferry serve DIR --token T\` (tus endpoint /uploads/) and @tus/server $TUS_SERVER_VERSION with @tus/file-store $FILE_STORE_VERSION (\`tests/peers/node/tus-server.mjs\`), both on 127.0.0.1, both storing on $(df -T "$STORE" | awk 'NR==2 {print $2}') ($STORE)"
    echo "- file: ${UPLOAD_MIB} MiB of random bytes; $RUNS run(s) per row, interleaved (each run starts one row later), median shown; every stored file compared with cmp, then deleted"
    [ -z "${CLIENT_CPUS:-}" ] || echo "- clients pinned: every client ran under \`taskset -c $CLIENT_CPUS\`; the servers were not pinned"
    echo "- noise: compilers (rustc, cc, ld) of other users were running at the start of $BENCH_BUSY of $BENCH_SAMPLES uploads; highest 1-minute load average $BENCH_LOAD_MAX"
    echo
    echo "| case | client → server | runs ok | median wall s | MiB/s | client CPU s | client peak RSS MiB | server CPU s | vs | ferry/peer time | ferry speedup |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|"
    for tool in "${ROWS[@]}"; do row "$tool"; done
    echo
    echo "Wall time is the client's, from start to the server's last answer (Node start-up included, the"
    echo "same for every tus-js-client row: starting Node and loading tus-js-client takes ${NODE_START} s here);"
    echo "\"server CPU s\" is the server process's user+sys time during that upload"
    echo "(from /proc). Peak RSS over the whole run: ferry serve $((FERRY_HWM / 1024)) MiB, @tus/server $((TUS_HWM / 1024)) MiB."
    echo "\"ferry/peer time\" < 1 and \"ferry speedup\" > 1 mean ferry was faster than the row's setup,"
    echo "against the row named under \"vs\": for tus-js-client into ferry serve, \`ferry put\` with the"
    echo "same number of connections into the same server (the client compared); for @tus/server,"
    echo "tus-js-client with the same settings into ferry serve (the server compared). Client peak RSS is"
    echo "from /usr/bin/time (Node's includes its runtime). @tus/server has no concatenation, so"
    echo "parallelUploads cannot be used with it. @tus/file-store never syncs to disk (no fsync): it"
    echo "answers while the bytes may still be only in the page cache; a server that makes accepted bytes"
    echo "durable before answering (fdatasync) pays for that in these rows."
    echo
    echo "Client command lines (FILE is the source, URL the server's tus endpoint):"
    echo
    echo '```'
    for tool in "${ROWS[@]}"; do printf '%-12s %s\n' "$tool" "$(cmdline "$tool")"; done
    echo '```'
    echo
    echo "- issue 3's bar (tus-js-client into ferry serve at least as fast as into @tus/server):"
    echo "  ferry serve speed / @tus/server speed, one tus-js-client (sequential) = $(ratio ferry-seq tus-node) (bar: ≥ 1);"
    echo "  $NCLIENTS tus-js-client at once = $(ratio ferry-c4 tus-c4) (bar: ≥ 1);"
    echo "  with parallelUploads 4 into ferry serve vs sequential into @tus/server = $(ratio ferry-p4 tus-node)"
    echo "- issue 4's bar (ferry put at least as fast as tus-js-client, both into ferry serve):"
    echo "  ferry put -x 4 speed / tus-js-client parallelUploads 4 speed = $(ratio put-x4 ferry-p4) (bar: ≥ 1);"
    echo "  ferry put -x 1 speed / tus-js-client sequential speed = $(ratio put-x1 ferry-seq)"
    if [ "$JOURNALS_LEFT" != 0 ]; then
        echo "- note: $JOURNALS_LEFT successful \`ferry put\` run(s) left a resume journal behind"
    fi
    if [ -n "$CHUNK_MIB" ]; then
        echo "- ${CHUNK_MIB} MiB chunks: ferry serve / @tus/server = $(ratio ferry-chunk tus-chunk)"
    fi
}

report >"$T/report.md"
cat "$T/report.md"
if [ "$bad" != 0 ]; then
    log "an upload into ferry serve failed, or a stored file differed, or the @tus/server row failed (see above)"
    for f in "$T/ferry-serve.err" "$T/tus-server.err"; do
        [ ! -s "$f" ] || log "$(basename "$f") (tail): $(tail -c 1500 "$f")"
    done
    exit 1
fi
