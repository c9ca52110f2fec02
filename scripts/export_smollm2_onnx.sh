#!/usr/bin/env bash
# The transformers.js side of the browser benchmark (bench/browser): SmolLM2-135M-Instruct as an f32 ONNX
# export of the same Q4_1 GGUF webvlm and wllama load (../shared/PEERS.md recipe).
#   1. transformers 5.x loads the GGUF dequantized to f32 (from_pretrained(gguf_file=...)); it refuses
#      save_pretrained for GGUF-loaded models, so a fresh model from the config gets the state dict, then is saved;
#   2. optimum-onnx 0.1.0 (which pins transformers<4.58) exports it in its own venv (system torch reused):
#      text-generation-with-past, one onnx/model.onnx;
#   3. the tokenizer and chat template saved by transformers 5.x (4.57's GGUF tokenizer conversion is wrong).
# Output: bench/browser/models/smollm2-onnx/ (git-ignored). Needs models/smollm2 (scripts/fetch_real_models.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/bench/browser/models/smollm2-onnx
work=${WORK:-$root/target/onnx-export}
gguf=$root/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
[[ -f $gguf ]] || { echo "$gguf missing: run scripts/fetch_real_models.sh" >&2; exit 1; }
mkdir -p "$work"
python3 - "$gguf" "$work/f32" <<'PY'
import sys, os, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
gguf, dst = sys.argv[1], sys.argv[2]
d, f = os.path.dirname(gguf), os.path.basename(gguf)
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
cfg = AutoConfig.from_pretrained(d, gguf_file=f)
fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
fresh.load_state_dict(m.state_dict(), strict=False)
fresh.tie_weights()
fresh.save_pretrained(dst, safe_serialization=True)
AutoTokenizer.from_pretrained(d, gguf_file=f).save_pretrained(dst)
m.generation_config.save_pretrained(dst)
# transformers 5 writes rope_theta inside rope_parameters; the exporter's transformers 4.57 reads the top-level
# key and would silently fall back to 10000 (SmolLM2 uses 100000): write both
import json
p = os.path.join(dst, "config.json")
c = json.load(open(p))
for k, v in (c.get("rope_parameters") or {}).items():
    c.setdefault(k, v)
json.dump(c, open(p, "w"), indent=1)
print("saved", dst)
PY
if [[ ! -x $work/venv/bin/optimum-cli ]]; then
  python3 -m venv --system-site-packages "$work/venv"
  "$work/venv/bin/pip" install -q "transformers>=4.57,<4.58" "optimum-onnx==0.1.0"
fi
rm -rf "$work/onnx"
"$work/venv/bin/optimum-cli" export onnx --model "$work/f32" --task text-generation-with-past "$work/onnx"
mkdir -p "$out/onnx"
cp "$work/onnx/model.onnx" "$out/onnx/model.onnx"
[[ -f $work/onnx/model.onnx_data ]] && cp "$work/onnx/model.onnx_data" "$out/onnx/"
cp "$work/onnx/config.json" "$out/"
for f in tokenizer.json tokenizer_config.json generation_config.json special_tokens_map.json chat_template.jinja; do
  [[ -f $work/f32/$f ]] && cp "$work/f32/$f" "$out/"
done
# transformers.js reads the chat template from tokenizer_config.json; check the exported rope_theta
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
cfg = json.load(open(f"{out}/config.json"))
assert cfg.get("rope_theta") == 100000.0, f"exported rope_theta {cfg.get('rope_theta')}, want 100000"
tc = json.load(open(f"{out}/tokenizer_config.json"))
j = f"{out}/chat_template.jinja"
if "chat_template" not in tc and os.path.exists(j):
    tc["chat_template"] = open(j).read()
    json.dump(tc, open(f"{out}/tokenizer_config.json", "w"), indent=1)
print("wrote", out, sorted(os.listdir(out)), sorted(os.listdir(out + "/onnx")))
PY
