#!/usr/bin/env bash
# The transformers.js side of the image-path benchmark (bench/browser, runtimes tfjs-vlm-wasm / tfjs-vlm-webgpu):
# models/smolvlm-256m-random (scripts/make_smolvlm256m_random.py) as the three f32 ONNX graphs transformers.js 4.3.1
# loads for Idefics3 (onnx/vision_encoder.onnx, onnx/embed_tokens.onnx, onnx/decoder_model_merged.onnx), exported
# with torch.onnx.export (optimum-onnx 0.1 does not export Idefics3), then checked against transformers'
# Idefics3ForConditionalGeneration with onnxruntime on tests/fixtures/images/chelsea.png (fails loudly on a
# mismatch). Details: scripts/export_smolvlm_onnx.py.
# Output: bench/browser/models/smolvlm-onnx/ (git-ignored). Needs the system python's torch + transformers 5.x.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=$root/models/smolvlm-256m-random
[[ -f $model/model.safetensors ]] || { echo "$model missing: run python3 scripts/make_smolvlm256m_random.py" >&2; exit 1; }
python3 -c 'import onnx, onnxruntime, onnxscript' 2>/dev/null || python3 -m pip install -q onnx onnxruntime onnxscript
python3 "$root/scripts/export_smolvlm_onnx.py" --model "$model" --out "$root/bench/browser/models/smolvlm-onnx" "$@"
