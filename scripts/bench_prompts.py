"""Prompts of the browser benchmark (bench/browser/prompts.json) from the transformers reference of the real
SmolLM2 test (tests/fixtures/real/smollm2_reference.json): per prompt, transformers' greedy text and its "safe
prefix" — the reference's own greedy tokens before the first near-tie step (top-1/top-2 logit margin < 0.1),
decoded with SmolLM2's tokenizer. Any correct runtime must produce that prefix; after a near-tie, f32 accumulation
order may legitimately pick the other token.
Usage: python3 scripts/bench_prompts.py [tokenizer.json]  (default: bench/browser/models/smollm2-onnx/tokenizer.json,
written by scripts/export_smollm2_onnx.sh from the same GGUF)."""
import json
import os
import sys

from tokenizers import Tokenizer

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tok_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "bench/browser/models/smollm2-onnx/tokenizer.json")
tok = Tokenizer.from_file(tok_path)
ref = json.load(open(os.path.join(root, "tests/fixtures/real/smollm2_reference.json")))
eos = ref["special_ids"]["eos"]
out = []
for r in ref["results"]:
    ids = r["greedy_ids"]
    end = r["first_eos_index"] if r["first_eos_index"] is not None else len(ids)
    safe = min(r["safe_prefix_len"], end)
    out.append({
        "prompt": r["prompt"],
        "system": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        "reference": tok.decode(ids[:end], skip_special_tokens=True),
        "reference_safe_prefix": tok.decode(ids[:safe], skip_special_tokens=True),
        "safe_prefix_tokens": safe,
        "min_margin_before_eos": r["min_margin_before_eos"],
    })
    assert r["rendered"].startswith("<|im_start|>system\n" + out[-1]["system"] + "<|im_end|>"), "system prompt"
dst = os.path.join(root, "bench/browser/prompts.json")
json.dump(out, open(dst, "w"), indent=1, ensure_ascii=False)
print("wrote", dst, [(o["safe_prefix_tokens"], o["reference_safe_prefix"][:30]) for o in out])
