#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with the Rust toolchain (and on CI).
#   scripts/test.sh            # from anywhere inside the repo
# Installs what the tests need when it is missing (nginx, python3, curl, openssl; via apt-get, as root
# or with sudo), then: rustfmt check, clippy -D warnings, release build of ferry, all tests in
# release mode (cargo-nextest when installed, plus doc tests; else cargo test).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

start=$(date +%s)
declare -a summary=()
failed=()
# step NAME CMD...: runs every step even after a failure (so one run shows everything that is
# wrong), and the script exits non-zero at the end if any step failed.
step() {
    local name=$1; shift
    local t0 rc=0; t0=$(date +%s)
    echo
    echo "==> $name: $*"
    "$@" || rc=$?
    if [ "$rc" = 0 ]; then
        summary+=("ok    $name ($(( $(date +%s) - t0 ))s)")
    else
        summary+=("FAIL  $name ($(( $(date +%s) - t0 ))s, exit $rc)")
        failed+=("$name")
    fi
}
print_summary() {
    echo
    echo "==> summary ($(( $(date +%s) - start ))s total)"
    printf '  %s\n' "${summary[@]}"
}

# --- system packages the tests need -----------------------------------------------------
SUDO=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); else SUDO=(); fi
fi
apt_updated=0
apt_install() { # apt_install PKG... (first available name wins for alternatives "a|b")
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: apt-get not found; install $* yourself" >&2
        return 1
    fi
    if [ "$(id -u)" != 0 ] && [ ${#SUDO[@]} = 0 ]; then
        echo "scripts/test.sh: need root or sudo to install $*" >&2
        return 1
    fi
    if [ "$apt_updated" = 0 ]; then
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}
have_nginx() { [ -n "${FERRY_NGINX:-}" ] || [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1; }

need=()
have_nginx || need+=(nginx)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)   # certificates for the HTTPS test
command -v aria2c >/dev/null 2>&1 || need+=(aria2)      # interop test of ferry serve
command -v redis-server >/dev/null 2>&1 || need+=(redis-server) # ferry serve --store redis://
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)       # ext4 images: failed reservations (hardening_client.rs)
if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing missing test dependencies: ${need[*]}"
    pkgs=()
    for n in "${need[@]}"; do
        case $n in
            nginx) pkgs+=(nginx-light) ;;
            *) pkgs+=("$n") ;;
        esac
    done
    # nginx-light is gone from newer Debian releases (it became a transitional package or was
    # dropped): fall back to plain nginx.
    if ! apt_install "${pkgs[@]}"; then
        pkgs=("${pkgs[@]/nginx-light/nginx}")
        apt_install "${pkgs[@]}"
    fi
    have_nginx || { echo "scripts/test.sh: nginx still missing after install" >&2; exit 1; }
fi
nginx_bin=${FERRY_NGINX:-/usr/sbin/nginx}
[ -x "$nginx_bin" ] || nginx_bin=$(command -v nginx)
echo "==> tools: $("$nginx_bin" -v 2>&1), $(python3 --version), $(curl --version | head -1 | cut -d' ' -f1-2)"

for comp in rustfmt clippy; do
    sub=${comp/rustfmt/fmt}
    if ! cargo "$sub" --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
        echo "==> installing rustup component $comp"
        rustup component add "$comp" || true
    fi
done

# --- tus peers: tus-js-client + @tus/server (Node) and tuspy (Python) ----------------------
# For the upload interop tests (crates/ferry/tests/serve_tus_clients.rs) and bench/upload.sh.
# Node packages come from tests/peers/node/package-lock.json (`npm ci`, redone only when the
# lock file or the Node version changed: a stamp in node_modules); tuspy from
# tests/peers/python/requirements.txt into the venv target/peers/venv (same stamp scheme).
# Installs nodejs, npm and python3-venv with apt-get when missing. The tests find the peers
# through the two variables exported here; they skip without them, except in CI (CI=true),
# where a missing peer fails them.
install_tus_peers() {
    local need=() stamp
    command -v node >/dev/null 2>&1 || need+=(nodejs)
    command -v npm >/dev/null 2>&1 || need+=(npm)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
    if [ ${#need[@]} -gt 0 ]; then
        echo "==> installing missing tus peer dependencies: ${need[*]}"
        apt_install "${need[@]}" || return 1
    fi
    local node_dir=tests/peers/node venv=target/peers/venv
    stamp="$(node --version) $(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)"
    if [ "$(cat "$node_dir/node_modules/.ferry-stamp" 2>/dev/null)" != "$stamp" ]; then
        echo "==> npm ci --prefix $node_dir"
        npm ci --prefix "$node_dir" --no-audit --no-fund || return 1
        echo "$stamp" >"$node_dir/node_modules/.ferry-stamp"
    fi
    stamp="$(python3 --version) $(sha256sum tests/peers/python/requirements.txt | cut -d' ' -f1)"
    if [ "$(cat "$venv/.ferry-stamp" 2>/dev/null)" != "$stamp" ]; then
        echo "==> python3 -m venv $venv; pip install -r tests/peers/python/requirements.txt"
        rm -rf "$venv"
        python3 -m venv "$venv" || return 1
        "$venv/bin/pip" install -q --disable-pip-version-check -r tests/peers/python/requirements.txt || return 1
        echo "$stamp" >"$venv/.ferry-stamp"
    fi
    export FERRY_PEERS_NODE_DIR="$PWD/$node_dir"
    export FERRY_PEERS_PYTHON="$PWD/$venv/bin/python"
    echo "==> tus peers: node $(node --version), $(cd "$node_dir" && node -p 'const r = require; ["tus-js-client", "@tus/server", "@tus/file-store"].map((p) => p + " " + JSON.parse(r("fs").readFileSync("node_modules/" + p + "/package.json")).version).join(", ")'), $("$FERRY_PEERS_PYTHON" -c 'import importlib.metadata as m; print("tuspy", m.version("tuspy"))')"
}
step tus-peers install_tus_peers

# --- the upload page in real browsers: Debian's chromium + playwright-core, firefox-esr + geckodriver
# For crates/ferry/tests/browser.rs. Chromium and Firefox come from apt-get (never a browser
# download: playwright-core has none of its own, the Firefox scenarios use no npm package);
# playwright-core from tests/browser/package-lock.json (`npm ci`, redone only when the lock file
# or the Node version changed); geckodriver built from crates.io (`cargo install --locked`, pinned
# below, into target/geckodriver; rebuilt only when the version or rustc changed: a stamp; the
# build takes about 4 minutes on 2 cores, the apt-get install of firefox-esr about 15 s). The tests
# find them through FERRY_BROWSER_DIR, FERRY_CHROMIUM, FERRY_FIREFOX and FERRY_GECKODRIVER; they
# skip without them, except in CI.
GECKODRIVER_VERSION=0.37.1
install_browser() {
    if [ ! -x /usr/bin/chromium ]; then
        echo "==> installing chromium (apt-get)"
        apt_install chromium fonts-dejavu-core || return 1
    fi
    if [ ! -x /usr/bin/firefox-esr ]; then
        echo "==> installing firefox-esr (apt-get)"
        apt_install firefox-esr fonts-dejavu-core || return 1
    fi
    local gd_root="${CARGO_TARGET_DIR:-$PWD/target}/geckodriver" gd_stamp
    gd_stamp="geckodriver $GECKODRIVER_VERSION $(rustc --version)"
    if [ "$(cat "$gd_root/.ferry-stamp" 2>/dev/null)" != "$gd_stamp" ] || [ ! -x "$gd_root/bin/geckodriver" ]; then
        echo "==> cargo install geckodriver@$GECKODRIVER_VERSION --locked --root $gd_root"
        cargo install "geckodriver@$GECKODRIVER_VERSION" --locked --force --root "$gd_root" || return 1
        echo "$gd_stamp" >"$gd_root/.ferry-stamp"
    fi
    local dir=tests/browser stamp
    stamp="$(node --version) $(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [ "$(cat "$dir/node_modules/.ferry-stamp" 2>/dev/null)" != "$stamp" ]; then
        echo "==> npm ci --prefix $dir"
        npm ci --prefix "$dir" --no-audit --no-fund || return 1
        echo "$stamp" >"$dir/node_modules/.ferry-stamp"
    fi
    export FERRY_BROWSER_DIR="$PWD/$dir"
    export FERRY_CHROMIUM=/usr/bin/chromium
    export FERRY_FIREFOX=/usr/bin/firefox-esr
    export FERRY_GECKODRIVER="$gd_root/bin/geckodriver"
    echo "==> browser: $(/usr/bin/chromium --version 2>/dev/null), playwright-core $(node -p "require('./$dir/node_modules/playwright-core/package.json').version")"
    echo "==> browser: $(/usr/bin/firefox-esr --version 2>/dev/null), $("$FERRY_GECKODRIVER" --version | sed -n 1p)"
}
step browser install_browser

# --- an S3-compatible server: s3s-fs ---------------------------------------------------------
# For ferry serve s3://… (crates/ferry/tests/serve_s3.rs, bench/s3.sh): s3s-fs built from
# crates.io (`cargo install --locked`, pinned below, into target/s3s-fs; rebuilt only when the
# version or rustc changed: a stamp; about 3 minutes on 2 cores). The tests find it through
# FERRY_S3S_FS; they skip without it, except in CI.
S3S_FS_VERSION=0.12.0
install_s3s_fs() {
    local root="${CARGO_TARGET_DIR:-$PWD/target}/s3s-fs" stamp
    stamp="s3s-fs $S3S_FS_VERSION $(rustc --version)"
    if [ "$(cat "$root/.ferry-stamp" 2>/dev/null)" != "$stamp" ] || [ ! -x "$root/bin/s3s-fs" ]; then
        echo "==> cargo install s3s-fs@$S3S_FS_VERSION --features binary --locked --root $root"
        cargo install "s3s-fs@$S3S_FS_VERSION" --features binary --locked --force --root "$root" || return 1
        echo "$stamp" >"$root/.ferry-stamp"
    fi
    export FERRY_S3S_FS="$root/bin/s3s-fs"
    echo "==> s3: $("$FERRY_S3S_FS" --version)"
}
step s3s-fs install_s3s_fs

# --- checks and tests ---------------------------------------------------------------------
step fmt cargo fmt --all -- --check --color never
step clippy cargo clippy --workspace --all-targets -- -D warnings
step build cargo build --release -p ferry

testlog=$(mktemp -t ferry-test-log.XXXXXX)
trap 'rm -f "$testlog"' EXIT
logged() { "$@" 2>&1 | tee -a "$testlog"; }
# One plain closing line over every runner: "tests: N passed, N failed, N skipped".
count_tests() {
    awk '
        / tests? run: / {   # nextest: "Summary [ 1.2s] 12 tests run: 11 passed, 1 failed, 0 skipped"
            for (i = 1; i <= NF; i++) {
                w = $i; gsub(/[,;]/, "", w)
                if (w == "passed") p += $(i-1); else if (w == "failed") f += $(i-1);
                else if (w == "skipped") s += $(i-1); else if (w == "timed") f += $(i-1)
            }
        }
        /^test result: / {  # cargo test: "test result: ok. 5 passed; 0 failed; 1 ignored; ..."
            for (i = 1; i <= NF; i++) {
                w = $i; gsub(/[,;]/, "", w)
                if (w == "passed") p += $(i-1); else if (w == "failed") f += $(i-1);
                else if (w == "ignored") s += $(i-1)
            }
        }
        END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }
    ' "$testlog"
}

if cargo nextest --version >/dev/null 2>&1; then
    # nextest runs each test in its own process, so a crash or a hang is one failed test, not
    # the end of the run (.config/nextest.toml kills a test hung for 5 minutes). nextest does
    # not run doc tests, so they run separately.
    step tests logged cargo nextest run --workspace --release --no-fail-fast
    step doctests logged cargo test --doc --workspace --release
else
    # Without nextest, a hung test would hang CI: bound the whole run instead.
    step tests logged timeout -k 30 45m cargo test --workspace --release --no-fail-fast
fi

print_summary
if [ ${#failed[@]} -gt 0 ]; then
    echo "scripts/test.sh: FAILED steps: ${failed[*]}"
    count_tests   # the closing line: "tests: N passed, N failed, N skipped"
    exit 1
fi
echo "scripts/test.sh: all steps passed"
count_tests
