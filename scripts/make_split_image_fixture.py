#!/usr/bin/env python3
"""Writes tests/fixtures/models/idefics3_split/: `transformers` goldens for an image the Idefics3 processor splits
into tiles, run through the whole tiny VLM engine (the random-weight `idefics3` checkpoint with the
`idefics3_engine` tokenizer, chat template and image processor, its `size.longest_edge` raised from 32 to 96 so
that chelsea.png (451 x 300) becomes 2 rows x 3 columns of 32 x 32 tiles plus the global image: 7 tiles).

What it checks in webvlm (tests/models.rs `idefics3_split_image_engine`): the prompt with the tile grid's
<row_r_col_c> tokens, each tile's image features (vision tower + connector, one submission per tile in
`Engine::encode_image`), their order in the prompt, the logits after the prompt and 20 greedy tokens.

Files: preprocessor_config.json (the engine's, size 96), golden.safetensors (input_ids i64, pixel_values f32
(7, 3, 32, 32), image_features f32 (7, 16, 64), last_logits f32 (320,), greedy_tokens i64 (20,)), golden.json.

    python3 -m venv /tmp/py && /tmp/py/bin/pip install "torch==2.15.*" "transformers==5.24.*" pillow
    /tmp/py/bin/python scripts/make_split_image_fixture.py
"""
import json
import os
import sys

import numpy as np
import safetensors
import safetensors.torch
import torch
import transformers
from PIL import Image
from transformers import AutoTokenizer, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(MODELS, "idefics3_split")
IMAGE = os.path.join(ROOT, "tests", "fixtures", "images", "chelsea.png")
# the first question whose 20 greedy tokens have every top1-top2 logit margin >= MIN_MARGIN (no near-tie)
QUESTIONS = ["What is in this picture?", "Describe the image.", "What animal is this?", "What color is the cat?",
             "Where is the cat sitting?"]
MIN_MARGIN = 0.05
N_NEW = 20
LONGEST_EDGE = 96

torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)


def run(model, proc, question, seq_len):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = proc.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.open(IMAGE).convert("RGB")
    inputs = proc(text=prompt, images=[[image]], return_tensors="pt")
    ids = inputs["input_ids"]
    pv = inputs["pixel_values"]
    pam = inputs["pixel_attention_mask"]
    assert pv.shape == (1, 7, 3, 32, 32), pv.shape
    assert bool(pam.all()), "no padded tile expected"

    feats = model.model.get_image_features(pv, pam, return_dict=True).pooler_output
    feats = torch.stack(list(feats), 0) if isinstance(feats, (list, tuple)) else feats
    feats = feats.reshape(7, seq_len, -1)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pv, pixel_attention_mask=pam)
    gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pv,
                         pixel_attention_mask=pam, do_sample=False, max_new_tokens=N_NEW, output_scores=True,
                         return_dict_in_generate=True, pad_token_id=0)
    new = gen.sequences[0, ids.shape[1]:].tolist()
    margins = []
    for s in gen.scores:
        top = torch.topk(s[0].float(), 2).values
        margins.append(float(top[0] - top[1]))
    assert torch.allclose(gen.scores[0][0], out.logits[0, -1], atol=1e-5)

    return ids, pv, feats, out, inputs, new, margins, prompt


def main():
    engine = os.path.join(MODELS, "idefics3_engine")
    with open(os.path.join(engine, "preprocessor_config.json")) as f:
        pcfg = json.load(f)
    pcfg["size"] = {"longest_edge": LONGEST_EDGE}
    assert pcfg["do_image_splitting"] and pcfg["max_image_size"] == {"longest_edge": 32}

    model = Idefics3ForConditionalGeneration.from_pretrained(os.path.join(MODELS, "idefics3")).eval().float()
    model.config._attn_implementation = "eager"
    gc = model.generation_config  # pure argmax, no eos stop (as the idefics3 fixture's goldens)
    gc.eos_token_id = None
    gc.do_sample = False
    tok = AutoTokenizer.from_pretrained(engine)
    ip = Idefics3ImageProcessorPil(**{k: v for k, v in pcfg.items() if k != "image_processor_type"})
    seq_len = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2 // (
        model.config.scale_factor ** 2)
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=seq_len,
                             chat_template=tok.chat_template)

    for question in QUESTIONS:
        got = run(model, proc, question, seq_len)
        print(f"{question!r}: prompt tokens {got[0].shape[1]}, greedy {got[5]}, min margin {min(got[6]):.4f}")
        if min(got[6]) >= MIN_MARGIN:
            break
    else:
        raise SystemExit("no question gives greedy tokens without a near-tie")
    ids, pv, feats, out, _, new, margins, prompt = got

    goldens = {
        "input_ids": ids[0].contiguous(),
        "pixel_values": pv[0].contiguous(),
        "image_features": feats.contiguous(),
        "last_logits": out.logits[0, -1].contiguous(),
        "greedy_tokens": torch.tensor(new, dtype=torch.long),
    }
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "preprocessor_config.json"), "w") as f:
        json.dump(pcfg, f, indent=1)
        f.write("\n")
    safetensors.torch.save_file(goldens, os.path.join(OUT, "golden.safetensors"),
                                metadata={"producer": "scripts/make_split_image_fixture.py"})
    meta = {
        "model": "tests/fixtures/models/idefics3 (weights) + idefics3_engine (tokenizer, template, processor)",
        "preprocessor_change": f"size.longest_edge 32 -> {LONGEST_EDGE}; max_image_size 32, splitting on",
        "image": "tests/fixtures/images/chelsea.png (451 x 300)",
        "question": question,
        "prompt": prompt,
        "grid": {"rows": 2, "cols": 3, "tiles_with_global": 7},
        "image_seq_len": seq_len,
        "input_ids": ids[0].tolist(),
        "greedy_tokens": new,
        "greedy_margins": margins,
        "greedy_min_margin": min(margins),
        "produced_by": {
            "input_ids": "Idefics3Processor(image_processor, tokenizer, image_seq_len=16)(apply_chat_template(messages,"
                         " add_generation_prompt=True), images=[[chelsea]])",
            "pixel_values": "the same processor call, (7, 3, 32, 32): 6 tiles row-major, then the global image",
            "image_features": "model.model.get_image_features(pixel_values, pixel_attention_mask): vision tower, "
                              "pixel shuffle, connector, per tile (7, 16, 64)",
            "last_logits": "model(input_ids, pixel_values, ...).logits[0, -1]",
            "greedy_tokens": f"model.generate(..., do_sample=False, max_new_tokens={N_NEW}), eos disabled",
        },
        "golden_tensors": {k: {"shape": list(v.shape), "max_abs": float(v.abs().max()) if v.is_floating_point()
                               else None} for k, v in goldens.items()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "safetensors": safetensors.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "recommended_tolerance": "f32: max_abs_err <= 1e-4 * max_abs(golden) + 1e-5; greedy tokens exact",
    }
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"prompt tokens {ids.shape[1]}, greedy {new}, min margin {min(margins):.4f}")


if __name__ == "__main__":
    main()
