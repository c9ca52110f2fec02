#!/usr/bin/env python3
"""Golden outputs of the offline VLM (models/llava-dinov2-smollm2, made by scripts/train_adapter.py) from
`transformers`, for tests/real_offline_vlm.rs and the browser e2e test.

    python scripts/offline_vlm_reference.py [--n 24]   # -> tests/fixtures/real/offline_vlm_reference.json

For the first N easy-vqa test questions (file order): the prompt ids (the training prompt: `<|im_start|>user\\n`
+ 36 image tokens + `\\n{question}<|im_end|>\\n<|im_start|>assistant\\n`), the greedy answer (4 tokens at most,
stopping at <|im_end|>) with its token ids, and the top-1/top-2 logit margin at each step, computed by
`LlavaForConditionalGeneration` on the saved checkpoint (f32; the decoder is SmolLM2's Q4_1 GGUF dequantized).
Images are given by their easy-vqa path relative to data/easy-vqa/test/ (fetched by scripts/fetch_offline_vlm.sh).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from train_adapter import IMAGE, ROOT, pixels, prompt_ids  # noqa: E402

torch.set_num_threads(1)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "llava-dinov2-smollm2"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "real", "offline_vlm_reference.json"))
    args = ap.parse_args()
    from easy_vqa import get_test_image_paths, get_test_questions
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(args.model)
    model = LlavaForConditionalGeneration.from_pretrained(args.model).eval()
    n_img = model.config.image_seq_length
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    qs, ans, ims = get_test_questions()
    paths = get_test_image_paths()
    rows = []
    for k in range(args.n):
        ids = prompt_ids(tok, qs[k], n_img)
        pv = pixels(paths[ims[k]])[None]
        g = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                           pixel_values=pv, do_sample=False, max_new_tokens=4, eos_token_id=end_id,
                           pad_token_id=end_id, output_scores=True, return_dict_in_generate=True)
        out = g.sequences[0, len(ids):].tolist()
        margins = []
        for s in g.scores:
            top = torch.topk(s[0].float(), 2).values
            margins.append(float(top[0] - top[1]))
        rows.append({"image": f"images/{ims[k]}.png", "question": qs[k], "answer": ans[k], "prompt_ids": ids,
                     "greedy_ids": out, "text": tok.decode(out, skip_special_tokens=True),
                     "top1_top2_margin": margins})
        print(f"{k:3d} {qs[k]!r:45} {ans[k]:10} -> {rows[-1]['text']!r} (margin {margins[0]:.2f})", flush=True)
    ref = {"model": "models/llava-dinov2-smollm2 (scripts/train_adapter.py, seed 0)", "image_px": IMAGE,
           "image_tokens": n_img, "generator": "transformers LlavaForConditionalGeneration, greedy, f32",
           "results": rows}
    with open(args.out, "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
