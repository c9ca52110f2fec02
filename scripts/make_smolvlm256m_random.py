"""A checkpoint shaped like HuggingFaceTB/SmolVLM-256M-Instruct, with random weights, for speed and memory
benchmarks of the image path (the hub is not reachable here; the real weights are not on a registry).

Dimensions as published for SmolVLM-256M-Instruct: SigLIP-style vision tower (hidden 768, 12 layers, 12 heads,
MLP 3072, patch 16, image 512: 1024 patches), pixel shuffle 4 (64 image tokens per 512 x 512 tile), connector
768*16 -> 576, SmolLM2-135M-shaped decoder (hidden 576, 30 layers, 9 heads / 3 KV heads, MLP 1536, vocab 49280,
rope theta 1e5, tied embeddings). bf16 weights, as the hub checkpoint ships them.

The tokenizer, chat template and processor settings come from the committed tiny Idefics3 fixture
(tests/fixtures/models/idefics3_engine): its image token ids are valid in the larger vocabulary. The processor is
set to one 512 x 512 tile (no splitting) unless --split. Weights are transformers' default init (seeded): text is
gibberish; only time and memory mean anything.

    python scripts/make_smolvlm256m_random.py [--out models/smolvlm-256m-random] [--split]
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from transformers import Idefics3Config, Idefics3ForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests/fixtures/models/idefics3_engine"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "models/smolvlm-256m-random"))
    ap.add_argument("--split", action="store_true", help="keep the processor's image splitting (2048 px max)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    base = json.loads((FIXTURE / "config.json").read_text())
    text = dict(base["text_config"])
    text.update(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        vocab_size=49280,
        max_position_embeddings=8192,
        rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
    )
    vision = dict(base["vision_config"])
    vision.update(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  patch_size=16, image_size=512)
    cfg = Idefics3Config(
        text_config=text,
        vision_config=vision,
        scale_factor=4,
        image_token_id=base["image_token_id"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(cfg).to(torch.bfloat16).eval()
    model.save_pretrained(out, safe_serialization=True)
    n = sum(p.numel() for p in model.parameters())
    print(f"{n / 1e6:.1f} M parameters -> {out}")

    shutil.copy(FIXTURE / "tokenizer_config.json", out / "tokenizer_config.json")
    # the fixture's word-level vocabulary (320 ids) padded with placeholder words to the model's 49280, so that
    # every id the random model emits decodes
    tok = json.loads((FIXTURE / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    used = set(vocab.values()) | {t["id"] for t in tok["added_tokens"]}
    for i in range(text["vocab_size"]):
        if i not in used:
            vocab[f"w{i}"] = i
    (out / "tokenizer.json").write_text(json.dumps(tok))
    pre = json.loads((FIXTURE / "preprocessor_config.json").read_text())
    longest = 4 * 512 if a.split else 512
    pre.update(size={"longest_edge": longest}, max_image_size={"longest_edge": 512}, do_image_splitting=a.split)
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=1))


if __name__ == "__main__":
    main()
