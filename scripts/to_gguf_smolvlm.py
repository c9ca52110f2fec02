#!/usr/bin/env python3
"""Convert the tiny `idefics3` fixture (HF safetensors) to llama.cpp-style GGUF: text model + mmproj.

Our own code, following the tensor names and metadata keys llama.cpp's convert_hf_to_gguf.py writes for
SmolVLM / Idefics3 (`LlamaModel` for the text side, `SmolVLMModel(MmprojModel)` for the projector) and the names
tools/mtmd/clip-impl.h reads.  Uses only gguf-py's GGUFWriter (file format) -- the name table is spelled out here.

Output: tests/fixtures/models/idefics3_gguf/{model.gguf, mmproj.gguf, README.md, mapping.json}  (all tensors f32)

Text model ("llama" arch): Q and K weights are permuted exactly like llama.cpp's `LlamaModel.permute`
(`undo_permute = True` for LlamaModel, which SmolVLM's text part goes through): per head, HF's rotate_half row order
[0..d/2) | [d/2..d) becomes interleaved pairs (row 2i <- i, row 2i+1 <- i + d/2), the layout ggml's normal
(non-NEOX) rope expects.  Vision tensors are not permuted (no rope in the ViT).

Verification at the end: read both files back with gguf.GGUFReader, undo the permutation, compare bit-exactly with
the HF safetensors.
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file

import gguf

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SRC = os.path.join(ROOT, "tests", "fixtures", "models", "idefics3")
DST = os.path.join(ROOT, "tests", "fixtures", "models", "idefics3_gguf")


def permute(w, n_head, n_head_kv):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (re-implemented, numpy)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head, n_head_kv):
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


TEXT_LAYER_MAP = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
VISION_LAYER_MAP = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.out_proj": "attn_out",
    "layer_norm1": "ln1",
    "layer_norm2": "ln2",
    "mlp.fc1": "ffn_up",
    "mlp.fc2": "ffn_down",
}


def text_name(hf):
    p = "model.text_model."
    assert hf.startswith(p), hf
    n = hf[len(p):]
    if n == "embed_tokens.weight":
        return "token_embd.weight"
    if n == "norm.weight":
        return "output_norm.weight"
    if n.startswith("layers."):
        _, i, rest = n.split(".", 2)
        return f"blk.{i}.{TEXT_LAYER_MAP[rest]}"
    raise KeyError(hf)


def vision_name(hf):
    if hf.startswith("model.connector.modality_projection.proj."):
        return "mm.model.fc." + hf.rsplit(".", 1)[1]
    p = "model.vision_model."
    assert hf.startswith(p), hf
    n = hf[len(p):]
    fixed = {
        "embeddings.patch_embedding.weight": "v.patch_embd.weight",
        "embeddings.patch_embedding.bias": "v.patch_embd.bias",
        "embeddings.position_embedding.weight": "v.position_embd.weight",
        "post_layernorm.weight": "v.post_ln.weight",
        "post_layernorm.bias": "v.post_ln.bias",
    }
    if n in fixed:
        return fixed[n]
    if n.startswith("encoder.layers."):
        _, _, i, rest = n.split(".", 3)
        mod, suffix = rest.rsplit(".", 1)
        return f"v.blk.{i}.{VISION_LAYER_MAP[mod]}.{suffix}"
    raise KeyError(hf)


def main():
    cfg = json.load(open(os.path.join(SRC, "config.json")))
    tc, vc = cfg["text_config"], cfg["vision_config"]
    golden = json.load(open(os.path.join(SRC, "golden.json")))
    w = load_file(os.path.join(SRC, "model.safetensors"))
    os.makedirs(DST, exist_ok=True)
    n_head, n_kv = tc["num_attention_heads"], tc["num_key_value_heads"]
    head_dim = tc.get("head_dim") or tc["hidden_size"] // n_head
    tied = "lm_head.weight" not in w
    mapping = {"text": {}, "mmproj": {}}

    # ---------------------------------------------------------------- text model
    tw = gguf.GGUFWriter(os.path.join(DST, "model.gguf"), "llama")
    tw.add_type(gguf.GGUFType.MODEL)
    tw.add_name("webvlm tiny idefics3 text (random)")
    tw.add_file_type(gguf.LlamaFileType.ALL_F32)
    tw.add_context_length(tc["max_position_embeddings"])
    tw.add_embedding_length(tc["hidden_size"])
    tw.add_block_count(tc["num_hidden_layers"])
    tw.add_feed_forward_length(tc["intermediate_size"])
    tw.add_head_count(n_head)
    tw.add_head_count_kv(n_kv)
    tw.add_rope_freq_base(float(tc["rope_parameters"]["rope_theta"]))
    tw.add_layer_norm_rms_eps(tc["rms_norm_eps"])
    tw.add_vocab_size(tc["vocab_size"])
    tw.add_rope_dimension_count(head_dim)
    # placeholder vocabulary (the fixture has no tokenizer): "<t{i}>" tokens, specials marked as control
    special = {v: k for k, v in golden["special_tokens"].items() if isinstance(v, int)}
    tokens, types = [], []
    for i in range(tc["vocab_size"]):
        if i in special and special[i].startswith("<"):
            tokens.append(special[i])
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(f"<t{i}>")
            types.append(gguf.TokenType.CONTROL if i in (0, 1, 2) else gguf.TokenType.NORMAL)
    tw.add_tokenizer_model("llama")
    tw.add_token_list(tokens)
    tw.add_token_scores([0.0] * len(tokens))
    tw.add_token_types(types)
    tw.add_bos_token_id(tc["bos_token_id"])
    tw.add_eos_token_id(tc["eos_token_id"])
    tw.add_pad_token_id(tc["pad_token_id"])
    tw.add_string("webvlm.note", "placeholder vocabulary; Q/K permuted as llama.cpp LlamaModel.permute")
    for hf in sorted(w):
        if not hf.startswith("model.text_model."):
            continue
        t = w[hf].astype(np.float32)
        name = text_name(hf)
        permuted = False
        if hf.endswith("q_proj.weight"):
            t = permute(t, n_head, n_head)
            permuted = True
        elif hf.endswith("k_proj.weight"):
            t = permute(t, n_head, n_kv)
            permuted = True
        tw.add_tensor(name, np.ascontiguousarray(t))
        mapping["text"][name] = {"hf": hf, "hf_shape": list(w[hf].shape), "gguf_ne": list(reversed(t.shape)),
                                 "permuted": permuted}
    if not tied:
        tw.add_tensor("output.weight", w["lm_head.weight"])
        mapping["text"]["output.weight"] = {"hf": "lm_head.weight"}
    tw.write_header_to_file()
    tw.write_kv_data_to_file()
    tw.write_tensors_to_file()
    tw.close()

    # ---------------------------------------------------------------- mmproj
    mw = gguf.GGUFWriter(os.path.join(DST, "mmproj.gguf"), "clip")
    mw.add_type(gguf.GGUFType.MMPROJ)
    mw.add_name("webvlm tiny idefics3 mmproj (random)")
    mw.add_file_type(gguf.LlamaFileType.ALL_F32)
    mw.add_clip_has_vision_encoder(True)
    mw.add_clip_projector_type(gguf.VisionProjectorType.IDEFICS3)
    mw.add_vision_projection_dim(tc["hidden_size"])
    mw.add_vision_image_size(vc["image_size"])
    mw.add_vision_patch_size(vc["patch_size"])
    mw.add_vision_embedding_length(vc["hidden_size"])
    mw.add_vision_feed_forward_length(vc["intermediate_size"])
    mw.add_vision_block_count(vc["num_hidden_layers"])
    mw.add_vision_head_count(vc["num_attention_heads"])
    mw.add_vision_image_mean([0.5, 0.5, 0.5])
    mw.add_vision_image_std([0.5, 0.5, 0.5])
    mw.add_vision_attention_layernorm_eps(vc.get("layer_norm_eps", 1e-5))
    mw.add_vision_projector_scale_factor(cfg.get("scale_factor", 2))
    mw.add_vision_use_gelu(True)
    mw.add_vision_preproc_image_size(vc["image_size"])  # llama.cpp: preprocessor size.longest_edge; tiny: 32
    for hf in sorted(w):
        if not (hf.startswith("model.vision_model.") or hf.startswith("model.connector.")):
            continue
        t = w[hf].astype(np.float32)
        name = vision_name(hf)
        mw.add_tensor(name, np.ascontiguousarray(t))
        mapping["mmproj"][name] = {"hf": hf, "hf_shape": list(t.shape), "gguf_ne": list(reversed(t.shape)),
                                   "permuted": False}
    mw.write_header_to_file()
    mw.write_kv_data_to_file()
    mw.write_tensors_to_file()
    mw.close()

    # ---------------------------------------------------------------- cross-check names with gguf-py's map
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, tc["num_hidden_layers"])
    vmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, vc["num_hidden_layers"])
    for name, m in mapping["text"].items():
        ref = tmap.get_name(m["hf"].replace("text_model.", ""), try_suffixes=(".weight", ".bias"))
        assert ref == name, (m["hf"], ref, name)
    for name, m in mapping["mmproj"].items():
        ref = vmap.get_name(m["hf"], try_suffixes=(".weight", ".bias"))
        assert ref == name, (m["hf"], ref, name)

    # ---------------------------------------------------------------- read back, verify exactly
    for fname, part in (("model.gguf", "text"), ("mmproj.gguf", "mmproj")):
        r = gguf.GGUFReader(os.path.join(DST, fname))
        seen = 0
        for t in r.tensors:
            m = mapping[part][t.name]
            arr = np.array(t.data).reshape(list(reversed([int(x) for x in t.shape])))
            if m["permuted"]:
                nk = n_head if t.name.endswith("attn_q.weight") else n_kv
                arr = unpermute(arr, n_head, nk)
            assert np.array_equal(arr, w[m["hf"]]), t.name
            seen += 1
        assert seen == len(mapping[part]), (fname, seen)
        print(fname, "verified", seen, "tensors", os.path.getsize(os.path.join(DST, fname)), "bytes")

    with open(os.path.join(DST, "mapping.json"), "w") as f:
        json.dump({"gguf_version": getattr(gguf, "__version__", None) or _ver(), "tied_lm_head": tied,
                   "n_head": n_head, "n_head_kv": n_kv, "head_dim": head_dim, **mapping}, f, indent=1)


def _ver():
    import importlib.metadata
    return importlib.metadata.version("gguf")


if __name__ == "__main__":
    sys.exit(main())
