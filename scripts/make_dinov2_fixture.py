#!/usr/bin/env python3
"""Tiny random LLaVA checkpoint with a DINOv2 vision tower + reference activations (goldens) for tests/dinov2.rs.

Writes tests/fixtures/models/llava_dinov2/ (same layout as scripts/make_model_fixtures.py, whose helpers it uses):
  config.json, model.safetensors   -- `LlavaForConditionalGeneration.save_pretrained`, f32; vision_config is a
                                      `Dinov2Config` (transformers' Llava accepts it: the tower is built with
                                      AutoModel.from_config -> Dinov2Model, and get_image_features takes
                                      hidden_states[vision_feature_layer], dropping the CLS row for strategy "default")
  golden.safetensors, golden.json  -- tower activations, projector output, logits, 20 greedy tokens; plus the tower
                                      alone at non-native image sizes (position-embedding interpolation)

Tower: hidden 32, 2 layers, 2 heads, mlp_ratio 2, patch 4, image_size 32 (pretraining grid 8x8 + CLS = 65 positions),
GELU (erf), eps 1e-6, qkv_bias. LLaVA: vision_feature_layer -1 (last encoder layer, before the final layernorm),
strategy "default" (CLS dropped -> 64 image tokens), projector 32 -> 64 -> 64 (GELU), tiny untied Llama.

Weights: reinit_ of make_model_fixtures.py, then layer scale lambda1 ~ 0.5 + 0.2 N and cls_token ~ 0.5 N (so that
layer scale and the class row are visible in the outputs).   Run:  python scripts/make_dinov2_fixture.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_fixtures as mf  # noqa: E402
from transformers import Dinov2Config, Dinov2Model, LlavaConfig, LlavaForConditionalGeneration  # noqa: E402

torch.set_num_threads(1)

# non-native sizes for the interpolation goldens: (height, width) -> patch grids 6x6 (down), 12x12 (up), 10x7
INTERP_SIZES = [(24, 24), (48, 48), (40, 28)]


def make_llava_dinov2(seed=4567):
    torch.manual_seed(seed)
    vcfg = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=32, patch_size=4,
        num_channels=3, hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True, layerscale_value=1.0,
        use_swiglu_ffn=False,
    )
    ID_IMG = 310
    tcfg = mf.tiny_llama_dict(vocab=320, tie=False)
    cfg = LlavaConfig(
        vision_config=vcfg.to_dict(), text_config=tcfg, image_token_index=ID_IMG, image_seq_length=64,
        projector_hidden_act="gelu", vision_feature_select_strategy="default", vision_feature_layer=-1,
        multimodal_projector_bias=True, tie_word_embeddings=False,
    )
    cfg._attn_implementation = "eager"
    model = LlavaForConditionalGeneration(cfg).eval().float()
    assert isinstance(model.model.vision_tower, Dinov2Model), type(model.model.vision_tower)
    mf.reinit_(model, seed)
    g = torch.Generator().manual_seed(seed + 7)
    for name, p in model.named_parameters():
        if name.endswith("lambda1"):
            p.copy_(0.5 + 0.2 * torch.randn(p.shape, generator=g))
        elif name.endswith("cls_token"):
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    mf.no_eos(model)

    g = torch.Generator().manual_seed(seed + 1)
    pixel_values = torch.rand((1, 3, 32, 32), generator=g) * 2 - 1
    prompt = [1, 17, 45] + [ID_IMG] * 64 + [88, 9, 150, 61]
    ids = torch.tensor([prompt], dtype=torch.long)

    tower = model.model.vision_tower
    vt = tower(pixel_values, output_hidden_states=True)
    hs = vt.hidden_states
    feat = model.model.get_image_features(pixel_values, return_dict=True)
    proj = torch.cat(list(feat.pooler_output), 0)
    sel = hs[-1][:, 1:]
    assert proj.shape == (64, 64), proj.shape
    assert torch.allclose(model.model.multi_modal_projector(sel)[0], proj, atol=1e-6)
    emb = model.model.language_model.embed_tokens(ids)

    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixel_values)
    gen = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixel_values, do_sample=False,
        max_new_tokens=mf.N_NEW, output_scores=True, return_dict_in_generate=True, pad_token_id=0,
    )
    seq = gen.sequences
    new = seq[0, ids.shape[1]:].tolist()
    assert len(new) == mf.N_NEW
    margins = mf.greedy_margins(gen.scores)
    # a generated <image> id would break the uncached re-check (and the test's token count): reject such seeds
    consistent = ID_IMG not in new and mf.check_greedy_is_argmax(model, seq, ids.shape[1], mf.N_NEW, pixel_values=pixel_values)
    merged = emb.clone()
    merged[ids == ID_IMG] = proj

    goldens = {
        "input_ids": ids[0],
        "pixel_values": pixel_values,
        "vision_embeddings": hs[0][0],
        "vision_hidden_layer0": hs[1][0],
        "vision_feature": hs[-1][0],
        "vision_last_hidden_state": vt.last_hidden_state[0],
        "projector": proj,
        "inputs_embeds": merged[0],
        "logits": out.logits[0],
        "greedy_tokens": torch.tensor(new, dtype=torch.long),
    }
    interp = {}
    for (h, w) in INTERP_SIZES:
        pv = torch.rand((1, 3, h, w), generator=g) * 2 - 1
        o = tower(pv, output_hidden_states=True)
        key = f"{h}x{w}"
        goldens[f"interp_{key}_pixel_values"] = pv
        goldens[f"interp_{key}_embeddings"] = o.hidden_states[0][0]
        goldens[f"interp_{key}_last_hidden_state"] = o.last_hidden_state[0]
        interp[key] = {"grid": [h // 4, w // 4], "tokens": 1 + (h // 4) * (w // 4)}

    meta = {
        "model_class": "LlavaForConditionalGeneration (vision_tower = Dinov2Model)",
        "input_ids": prompt,
        "special_tokens": {"<image>": ID_IMG, "bos": 1, "pad": 0},
        "image_seq_len": 64,
        "greedy_tokens": new,
        "greedy_margins": margins,
        "greedy_min_margin": min(margins),
        "greedy_matches_uncached_argmax": consistent,
        "interp_sizes": interp,
        "produced_by": {
            "pixel_values": "torch.rand seeded, *2-1, shape (1, 3, 32, 32) = the pretraining size (no interpolation)",
            "vision_embeddings": "vision_tower(pv, output_hidden_states=True).hidden_states[0]: [CLS; patch conv] + position embeddings, 65 rows",
            "vision_hidden_layer0": "hidden_states[1] (encoder layer 0 output)",
            "vision_feature": "hidden_states[-1] (last encoder layer, before the final layernorm), 65 rows incl. CLS",
            "vision_last_hidden_state": "vision_tower(pv).last_hidden_state (after layernorm), 65 rows",
            "projector": "get_image_features(pv).pooler_output = multi_modal_projector(hidden_states[-1][:, 1:]) (strategy 'default' drops CLS)",
            "inputs_embeds": "embed_tokens(ids) with the 64 <image> rows replaced by projector rows in order",
            "logits": "model(input_ids, attention_mask, pixel_values).logits[0]",
            "greedy_tokens": f"model.generate(..., do_sample=False, max_new_tokens={mf.N_NEW}), eos disabled",
            "interp_*": ("the tower alone on images of other sizes (HxW in the name): hidden_states[0] and last_hidden_state; "
                         "Dinov2Embeddings.interpolate_pos_encoding resamples the 8x8 patch position grid bicubically "
                         "(F.interpolate size=(H/4, W/4), align_corners=False, in f32; transformers 5 passes size=, not the "
                         "older scale_factor with the +0.1 offset)"),
        },
        "recommended_tolerance": "f32: max_abs_err <= 1e-4 * max_abs(golden); greedy tokens exact",
    }
    return model, goldens, meta


def main():
    # reuse the seed search and saver of make_model_fixtures.py (writes tests/fixtures/models/llava_dinov2/)
    mf.build_with_seed_search("llava_dinov2", make_llava_dinov2, 4000)
    d = os.path.join(mf.OUT, "llava_dinov2")
    with open(os.path.join(d, "golden.json")) as f:
        text = f.read()
    text = text.replace("make_model_fixtures.py: matrices", "make_model_fixtures.py (+ lambda1 0.5+0.2N, cls_token 0.5N in make_dinov2_fixture.py): matrices")
    with open(os.path.join(d, "golden.json"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
