#!/usr/bin/env bash
# Builds the wasm part of the npm package into pkg/wasm/ (webvlm.js, webvlm_bg.wasm, webvlm.d.ts).
#   scripts/build_wasm.sh            # dev profile (what the tests use; faster to build)
#   scripts/build_wasm.sh --release  # release profile (for publishing / benchmarks)
# Uses the wasm-bindgen CLI directly (its version must equal the wasm-bindgen crate's, see Cargo.lock); no
# wasm-opt pass (Debian's binaryen 108 breaks modules; see DESIGN.md §8).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
args=()
if [[ "${1:-}" == "--release" ]]; then profile=release; args=(--release); fi
want=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$have" != "$want" ]]; then
  echo "wasm-bindgen CLI $have != crate $want; run: cargo install wasm-bindgen-cli --version =$want" >&2
  exit 1
fi
cargo build --target wasm32-unknown-unknown --lib "${args[@]}"
wasm-bindgen --target web --out-dir pkg/wasm --out-name webvlm "target/wasm32-unknown-unknown/$profile/webvlm.wasm"
ls -l pkg/wasm
