#!/usr/bin/env bash
# wgpool in the browser: builds the WebAssembly module (wgpu's WebGPU backend), serves web/ on
# 127.0.0.1 and checks the demo page in Debian's headless Chromium. See web/README.md.
#
#   web/run-browser-test.sh            build, run the page's cases, save web/screenshot.png;
#                                      exits non-zero on any mismatch, WebGPU error or no adapter
#   web/run-browser-test.sh --serve    build, then serve the page at http://127.0.0.1:8000/
#
# Further arguments go to test/browser-test.mjs (--timeout S, --stall S, --port N,
# --screenshot FILE, --query "cases=120&f16=40&seed=7&apis=encoder,host").
# Environment: WGPOOL_WEB_QUERY (the page's URL parameters, if no --query), CARGO_TARGET_DIR.
# Installs what is missing: Debian's chromium, the wasm32 target, wasm-bindgen-cli at exactly the
# version in web/Cargo.lock, playwright-core (npm ci; it never downloads a browser).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
started=$SECONDS
log() { printf '[web %4ds] %s\n' $((SECONDS - started)) "$*"; }

serve=0
for arg in "$@"; do [[ $arg == --serve ]] && serve=1; done

# 1. Tools, each only if missing.
if [[ $serve == 0 && ! -x ${CHROMIUM:-/usr/bin/chromium} ]]; then
  log "installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
if [[ ! -d node_modules/playwright-core || package-lock.json -nt node_modules/.package-lock.json ]]; then
  log "npm ci (playwright-core)"
  npm ci --no-audit --no-fund --loglevel=error
fi

# 2. The module, in release, and its JS bindings in web/pkg. Not --locked: a dependency the
# library gains later is added to web/Cargo.lock (the versions already there stay).
log "building the wasm module"
cargo build -q --release --target wasm32-unknown-unknown
if git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet -- Cargo.lock; then
  log "note: web/Cargo.lock changed (the library's dependencies did); commit it"
fi
wb_version=$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)
[[ -n $wb_version ]] || { echo "no wasm-bindgen in web/Cargo.lock" >&2; exit 1; }
if [[ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $wb_version" ]]; then
  log "installing wasm-bindgen-cli $wb_version (must match the wasm-bindgen crate exactly)"
  # Only the wasm-bindgen binary, without the TLS stack its test runner needs (a quicker build).
  # --locked first; its lock file can name a crate version the registry no longer serves.
  install=(cargo install -q wasm-bindgen-cli --version "=$wb_version" --no-default-features --bin wasm-bindgen)
  "${install[@]}" --locked 2>/dev/null || "${install[@]}"
fi
target_dir=$(cargo metadata -q --format-version 1 --no-deps \
  | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
wasm-bindgen --target web --no-typescript --out-dir pkg \
  "$target_dir/wasm32-unknown-unknown/release/wgpool_web.wasm"
log "built web/pkg ($(du -k pkg/wgpool_web_bg.wasm | cut -f1) KiB of wasm)"

# 3. The page.
if [[ $serve == 1 ]]; then
  exec node test/browser-test.mjs "$@"
fi
query=()
if [[ -n ${WGPOOL_WEB_QUERY:-} && " $* " != *" --query "* ]]; then query=(--query "$WGPOOL_WEB_QUERY"); fi
log "running the page in headless Chromium"
status=0
node test/browser-test.mjs "${query[@]}" "$@" || status=$?
log "done (exit $status)"
exit $status
