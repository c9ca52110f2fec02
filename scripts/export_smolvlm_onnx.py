"""The transformers.js side of the image-path benchmark (bench/browser, runtimes tfjs-vlm-*): the SmolVLM-256M-shaped
checkpoint (models/smolvlm-256m-random) as the three f32 ONNX graphs transformers.js 4.3.1 loads for
Idefics3ForConditionalGeneration (session config "ImageTextToText"), since optimum-onnx 0.1 does not export Idefics3:

  onnx/vision_encoder.onnx        pixel_values [batch, num_images, 3, 512, 512] f32,
                                  pixel_attention_mask [batch, num_images, 512, 512] bool
                                  -> image_features [batch * num_images, 64, 576]
  onnx/embed_tokens.onnx          input_ids [batch, sequence] int64 -> inputs_embeds [batch, sequence, 576]
  onnx/decoder_model_merged.onnx  inputs_embeds, attention_mask [batch, past + sequence] int64,
                                  position_ids [batch, sequence] int64,
                                  past_key_values.{0..29}.{key,value} [batch, 3, past, 64]
                                  -> logits [batch, sequence, 49280], present.{0..29}.{key,value}

The graphs are small torch modules written here over the checkpoint's weights (cast bf16 -> f32), exported with
torch.onnx.export (TorchScript exporter, dynamic batch / sequence / past axes only: transformers.js creates the
first, empty past tensors from the graph's input shapes and turns every symbolic dim it does not know into 0, so
the KV-head and head dims are static). The decoder takes a zero-length past on the first step.

Validation (fails loudly): onnxruntime runs the three graphs on fixtures/images/chelsea.png with the prompt the
webvlm-vlm runtime uses ("Describe this image.", one 512 x 512 tile) and must match transformers'
Idefics3ForConditionalGeneration (f32) in the logits of the prefill and of each greedy step (max abs diff below
--tol) and in the greedy token ids. The reference ids, the python processor's input ids and pixel values are written
next to the model (reference.json, pixel_values_*.f32, also for the JPEG and WebP files the benchmark sends) for the browser check in bench/browser/bench.js.

    python3 scripts/export_smolvlm_onnx.py [--model models/smolvlm-256m-random] [--out bench/browser/models/smolvlm-onnx]
"""

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Describe this image."  # bench/browser/bench.js, webvlm-vlm
IMAGE = ROOT / "tests/fixtures/images/chelsea.png"
# the files the benchmark sends (bench.js IMAGES): the same photo, PNG, JPEG q90, lossless WebP; each gets its own
# python reference (their decoded pixels are not all identical)
BENCH_IMAGES = ["images/chelsea.png", "processor/chelsea_q90.jpg", "processor/chelsea_lossless.webp"]


# ---------------------------------------------------------------------------------------------------------------
# graph modules (f32), reading the checkpoint's state dict
# ---------------------------------------------------------------------------------------------------------------


def _linear(w, b=None):
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    lin.weight.data.copy_(w)
    if b is not None:
        lin.bias.data.copy_(b)
    return lin


def _layernorm(w, b, eps):
    ln = nn.LayerNorm(w.shape[0], eps=eps)
    ln.weight.data.copy_(w)
    ln.bias.data.copy_(b)
    return ln


class VisionBlock(nn.Module):
    def __init__(self, sd, p, heads, eps):
        super().__init__()
        self.heads = heads
        self.ln1 = _layernorm(sd[p + "layer_norm1.weight"], sd[p + "layer_norm1.bias"], eps)
        self.ln2 = _layernorm(sd[p + "layer_norm2.weight"], sd[p + "layer_norm2.bias"], eps)
        a = p + "self_attn."
        # q, k, v as one matmul
        w = torch.cat([sd[a + n + ".weight"] for n in ("q_proj", "k_proj", "v_proj")])
        b = torch.cat([sd[a + n + ".bias"] for n in ("q_proj", "k_proj", "v_proj")])
        self.qkv = _linear(w, b)
        self.out = _linear(sd[a + "out_proj.weight"], sd[a + "out_proj.bias"])
        self.fc1 = _linear(sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])
        self.fc2 = _linear(sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])

    def forward(self, x, key_bias):
        n, t, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(self.ln1(x)).reshape(n, t, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        s = torch.matmul(q, k.transpose(-1, -2)) * (hd**-0.5) + key_bias
        o = torch.matmul(torch.softmax(s, dim=-1), v).transpose(1, 2).reshape(n, t, d)
        x = x + self.out(o)
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class VisionEncoder(nn.Module):
    """SigLIP-style tower + Idefics3 connector (pixel shuffle, projection) for full, unpadded 512 x 512 tiles: patch
    positions are then 0..1023 (what the checkpoint's bucketed position ids reduce to for a whole tile); patches
    with no valid pixel are masked out as attention keys."""

    def __init__(self, sd, vc, scale):
        super().__init__()
        self.patch = vc["patch_size"]
        self.side = vc["image_size"] // self.patch
        self.scale = scale
        d = vc["hidden_size"]
        self.conv = nn.Conv2d(3, d, self.patch, self.patch)
        self.conv.weight.data.copy_(sd["model.vision_model.embeddings.patch_embedding.weight"])
        self.conv.bias.data.copy_(sd["model.vision_model.embeddings.patch_embedding.bias"])
        self.pos = nn.Parameter(sd["model.vision_model.embeddings.position_embedding.weight"].clone())
        eps = vc.get("layer_norm_eps", 1e-6)
        self.blocks = nn.ModuleList(
            VisionBlock(sd, f"model.vision_model.encoder.layers.{i}.", vc["num_attention_heads"], eps)
            for i in range(vc["num_hidden_layers"])
        )
        self.post = _layernorm(sd["model.vision_model.post_layernorm.weight"], sd["model.vision_model.post_layernorm.bias"], eps)
        self.proj = _linear(sd["model.connector.modality_projection.proj.weight"])

    def forward(self, pixel_values, pixel_attention_mask):
        size = self.side * self.patch
        x = pixel_values.reshape(-1, 3, size, size)
        m = pixel_attention_mask.reshape(-1, self.side, self.patch, self.side, self.patch)
        valid = m.to(torch.float32).amax(dim=(2, 4)).reshape(-1, 1, 1, self.side * self.side)
        key_bias = (1.0 - valid) * torch.finfo(torch.float32).min
        x = self.conv(x).flatten(2).transpose(1, 2) + self.pos
        for blk in self.blocks:
            x = blk(x, key_bias)
        x = self.post(x)
        # pixel shuffle: each s x s block of patches becomes one token, features ordered (row in block, column in
        # block, channel); tokens in raster order of the blocks
        s, g, d = self.scale, self.side // self.scale, x.shape[-1]
        x = x.reshape(-1, g, s, g, s, d).permute(0, 1, 3, 2, 4, 5).reshape(-1, g * g, s * s * d)
        return self.proj(x)


class EmbedTokens(nn.Module):
    def __init__(self, sd):
        super().__init__()
        self.w = nn.Parameter(sd["model.text_model.embed_tokens.weight"].clone())

    def forward(self, input_ids):
        return self.w[input_ids]


class RMSNorm(nn.Module):
    def __init__(self, w, eps):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.eps = eps

    def forward(self, x):
        return self.w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class DecoderLayer(nn.Module):
    def __init__(self, sd, p, tc):
        super().__init__()
        self.h, self.kv, self.hd = tc["num_attention_heads"], tc["num_key_value_heads"], tc["head_dim"]
        eps = tc["rms_norm_eps"]
        self.n1 = RMSNorm(sd[p + "input_layernorm.weight"], eps)
        self.n2 = RMSNorm(sd[p + "post_attention_layernorm.weight"], eps)
        a = p + "self_attn."
        self.qkv = _linear(torch.cat([sd[a + n + ".weight"] for n in ("q_proj", "k_proj", "v_proj")]))
        self.o = _linear(sd[a + "o_proj.weight"])
        self.gate_up = _linear(torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]]))
        self.down = _linear(sd[p + "mlp.down_proj.weight"])

    @staticmethod
    def rope(x, cos, sin):
        half = x.shape[-1] // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rot * sin

    def forward(self, x, cos, sin, bias, past_k, past_v):
        b, t, _ = x.shape
        qkv = self.qkv(self.n1(x))
        q = qkv[..., : self.h * self.hd].reshape(b, t, self.h, self.hd).transpose(1, 2)
        k = qkv[..., self.h * self.hd : (self.h + self.kv) * self.hd].reshape(b, t, self.kv, self.hd).transpose(1, 2)
        v = qkv[..., (self.h + self.kv) * self.hd :].reshape(b, t, self.kv, self.hd).transpose(1, 2)
        q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
        # grouped query attention: query head i reads KV head i // (h / kv)
        g = self.h // self.kv
        qg = q.reshape(b, self.kv, g * t, self.hd)
        s = torch.matmul(qg, k.transpose(-1, -2)).reshape(b, self.kv, g, t, -1) * (self.hd**-0.5) + bias
        o = torch.matmul(torch.softmax(s, dim=-1).reshape(b, self.kv, g * t, -1), v)
        o = o.reshape(b, self.h, t, self.hd).transpose(1, 2).reshape(b, t, self.h * self.hd)
        x = x + self.o(o)
        gu = self.gate_up(self.n2(x))
        inter = gu.shape[-1] // 2
        x = x + self.down(nn.functional.silu(gu[..., :inter]) * gu[..., inter:])
        return x, k, v


class Decoder(nn.Module):
    def __init__(self, sd, tc):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(sd, f"model.text_model.layers.{i}.", tc) for i in range(tc["num_hidden_layers"]))
        self.norm = RMSNorm(sd["model.text_model.norm.weight"], tc["rms_norm_eps"])
        lm = sd.get("lm_head.weight", sd["model.text_model.embed_tokens.weight"])  # tied
        self.lm_head = _linear(lm)
        theta = (tc.get("rope_parameters") or {}).get("rope_theta", tc.get("rope_theta", 10000.0))
        hd = tc["head_dim"]
        self.register_buffer("inv_freq", 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)), persistent=False)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        t = inputs_embeds.shape[1]
        past_len = past[0].shape[2]
        total = past_len + t
        # rotary tables from the given positions
        f = position_ids.to(torch.float32).unsqueeze(-1) * self.inv_freq
        f = torch.cat([f, f], dim=-1).unsqueeze(1)
        cos, sin = torch.cos(f), torch.sin(f)
        # causal (query i sits at past_len + i) and padding mask, additive; shape [b, 1, 1, t, total]
        qpos = torch.arange(t, device=inputs_embeds.device).unsqueeze(1) + past_len
        kpos = torch.arange(total, device=inputs_embeds.device).unsqueeze(0)
        allowed = (kpos <= qpos).unsqueeze(0) & (attention_mask[:, None, :] > 0)
        bias = ((~allowed).to(torch.float32) * torch.finfo(torch.float32).min)[:, None, None]
        x = inputs_embeds
        present = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, cos, sin, bias, past[2 * i], past[2 * i + 1])
            present += [k, v]
        return (self.lm_head(self.norm(x)), *present)


# ---------------------------------------------------------------------------------------------------------------


def export(mod, args, path, input_names, output_names, dynamic_axes, static_out=None):
    t = time.time()
    with torch.no_grad():
        torch.onnx.export(
            mod, args, str(path), input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
            opset_version=17, do_constant_folding=True, dynamo=False,
        )
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    if static_out:  # symbolic output dims the tracer left that are in fact fixed
        for o in m.graph.output:
            for axis, v in static_out.get(o.name, {}).items():
                o.type.tensor_type.shape.dim[axis].Clear()
                o.type.tensor_type.shape.dim[axis].dim_value = v
        onnx.save(m, str(path))
    shapes = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    print(f"exported {path.name} in {time.time() - t:.0f} s ({path.stat().st_size / 1e6:.0f} MB): {shapes if len(shapes) < 5 else dict(list(shapes.items())[:5])}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models/smolvlm-256m-random"))
    ap.add_argument("--out", default=str(ROOT / "bench/browser/models/smolvlm-onnx"))
    ap.add_argument("--steps", type=int, default=8, help="greedy steps compared")
    ap.add_argument("--tol", type=float, default=1e-2, help="max abs logit diff allowed")
    ap.add_argument("--skip-export", action="store_true", help="only validate the existing graphs")
    a = ap.parse_args()
    src, out = Path(a.model), Path(a.out)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)

    from safetensors.torch import load_file

    cfg = json.loads((src / "config.json").read_text())
    tc, vc = cfg["text_config"], cfg["vision_config"]
    sd = {k: v.to(torch.float32) for k, v in load_file(str(src / "model.safetensors")).items()}
    n_layers, kv, hd, d = tc["num_hidden_layers"], tc["num_key_value_heads"], tc["head_dim"], tc["hidden_size"]
    side = vc["image_size"]
    image_seq_len = (side // vc["patch_size"]) ** 2 // cfg["scale_factor"] ** 2

    # ---- model folder: config, processor and tokenizer files transformers.js reads
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(src / f, out / f)
    (out / "processor_config.json").write_text(json.dumps({"processor_class": "Idefics3Processor", "image_seq_len": image_seq_len}, indent=1))
    # transformers.js's AutoProcessor picks the processor class from preprocessor_config.json
    pre = json.loads((src / "preprocessor_config.json").read_text())
    pre["processor_class"] = "Idefics3Processor"
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=1))

    names_past = [f"past_key_values.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]
    names_present = [f"present.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]
    if not a.skip_export:
        vis = VisionEncoder(sd, vc, cfg["scale_factor"]).eval()
        export(
            vis, (torch.zeros(1, 1, 3, side, side), torch.ones(1, 1, side, side, dtype=torch.bool)),
            out / "onnx/vision_encoder.onnx", ["pixel_values", "pixel_attention_mask"], ["image_features"],
            {"pixel_values": {0: "batch_size", 1: "num_images"}, "pixel_attention_mask": {0: "batch_size", 1: "num_images"},
             "image_features": {0: "batch_size_x_num_images"}},
            static_out={"image_features": {1: image_seq_len}},
        )
        export(
            EmbedTokens(sd).eval(), (torch.zeros(1, 5, dtype=torch.int64),), out / "onnx/embed_tokens.onnx", ["input_ids"],
            ["inputs_embeds"], {"input_ids": {0: "batch_size", 1: "sequence_length"}, "inputs_embeds": {0: "batch_size", 1: "sequence_length"}},
        )
        dec = Decoder(sd, tc).eval()
        t, p = 3, 2  # traced with a non-empty past; the axes are dynamic (an empty past is checked below)
        dyn = {"inputs_embeds": {0: "batch_size", 1: "sequence_length"}, "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
               "position_ids": {0: "batch_size", 1: "sequence_length"}, "logits": {0: "batch_size", 1: "sequence_length"}}
        dyn.update({n: {0: "batch_size", 2: "past_sequence_length"} for n in names_past})
        dyn.update({n: {0: "batch_size", 2: "total_sequence_length"} for n in names_present})
        export(
            dec, (torch.randn(1, t, d), torch.ones(1, p + t, dtype=torch.int64), torch.arange(p, p + t)[None],
                  *[torch.randn(1, kv, p, hd) for _ in names_past]),
            out / "onnx/decoder_model_merged.onnx", ["inputs_embeds", "attention_mask", "position_ids", *names_past],
            ["logits", *names_present], dyn,
        )
    del sd

    # ---- reference: transformers (f32) on the image + prompt of the webvlm-vlm runtime
    import onnxruntime as ort
    from PIL import Image
    from transformers import AutoTokenizer, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    tok = AutoTokenizer.from_pretrained(src)
    proc = Idefics3Processor(image_processor=Idefics3ImageProcessor.from_pretrained(src), tokenizer=tok, image_seq_len=image_seq_len,
                             chat_template=json.loads((src / "tokenizer_config.json").read_text())["chat_template"])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    inputs = proc(text=text, images=[[Image.open(IMAGE).convert("RGB")]], return_tensors="pt")
    ids = inputs["input_ids"]
    print(f"prompt {text!r}: {ids.shape[1]} tokens, pixel_values {tuple(inputs['pixel_values'].shape)}")
    model = Idefics3ForConditionalGeneration.from_pretrained(src, dtype=torch.float32, attn_implementation="eager").eval()
    g = model.generate(**inputs, max_new_tokens=a.steps, do_sample=False, output_logits=True, return_dict_in_generate=True,
                       eos_token_id=None, min_new_tokens=a.steps)
    ref_ids = g.sequences[0, ids.shape[1]:].tolist()
    ref_logits = [x[0].numpy() for x in g.logits]
    # the image features on their own too (random weights: the image moves the logits only a little)
    ref_feats = model.model.get_image_features(inputs["pixel_values"], inputs["pixel_attention_mask"])
    ref_feats = getattr(ref_feats, "pooler_output", ref_feats)
    ref_feats = (ref_feats if torch.is_tensor(ref_feats) else torch.cat(list(ref_feats))).reshape(-1, d).numpy()
    per_image = {}
    for rel in BENCH_IMAGES:
        x = proc(text=text, images=[[Image.open(ROOT / "tests/fixtures" / rel).convert("RGB")]], return_tensors="pt")
        gx = model.generate(**x, max_new_tokens=a.steps, do_sample=False, output_logits=True, return_dict_in_generate=True,
                            eos_token_id=None, min_new_tokens=a.steps)
        pv_file = "pixel_values_" + Path(rel).name.replace(".", "_") + ".f32"
        x["pixel_values"].numpy().astype("<f4").tofile(out / pv_file)
        per_image["/fixtures/" + rel] = {
            "input_ids": x["input_ids"][0].tolist(), "greedy_ids": gx.sequences[0, x["input_ids"].shape[1]:].tolist(),
            "top1_top2_margins": [float(np.diff(np.sort(l[0].numpy())[-2:])[0]) for l in gx.logits],
            "pixel_values_file": pv_file, "pixel_values_shape": list(x["pixel_values"].shape),
        }
        print(f"transformers on {rel}: greedy ids {per_image['/fixtures/' + rel]['greedy_ids']}, "
              f"first-step margin {per_image['/fixtures/' + rel]['top1_top2_margins'][0]:.3f}")
    del model

    # ---- the ONNX graphs in onnxruntime, fed the way transformers.js feeds them
    so = ort.SessionOptions()
    sess = {n: ort.InferenceSession(str(out / f"onnx/{n}.onnx"), so, providers=["CPUExecutionProvider"])
            for n in ("vision_encoder", "embed_tokens", "decoder_model_merged")}
    for n, s in sess.items():
        print(n, [(i.name, i.shape) for i in s.get_inputs()[:4]], "->", [(o.name, o.shape) for o in s.get_outputs()[:2]])
    pv = inputs["pixel_values"].numpy().astype(np.float32)
    pam = inputs["pixel_attention_mask"].numpy().astype(bool)
    t0 = time.time()
    feats = sess["vision_encoder"].run(None, {"pixel_values": pv, "pixel_attention_mask": pam})[0]
    feat_diff = float(np.abs(feats.reshape(-1, d) - ref_feats).max())
    print(f"vision_encoder (onnxruntime CPU): {time.time() - t0:.1f} s, image_features {feats.shape}, max abs diff vs transformers "
          f"{feat_diff:.2e} (scale {float(np.abs(ref_feats).max()):.2f})")
    emb = sess["embed_tokens"].run(None, {"input_ids": ids.numpy()})[0]
    emb[0, ids[0].numpy() == cfg["image_token_id"]] = feats.reshape(-1, feats.shape[-1])
    seq = ids[0].tolist()
    past = {n: np.zeros((1, kv, 0, hd), np.float32) for n in names_past}  # transformers.js: empty past first
    x, pos0 = emb, 0
    ort_ids, diffs = [], []
    for step in range(a.steps):
        t = x.shape[1]
        feeds = {"inputs_embeds": x, "attention_mask": np.ones((1, pos0 + t), np.int64),
                 "position_ids": np.arange(pos0, pos0 + t, dtype=np.int64)[None], **past}
        res = sess["decoder_model_merged"].run(None, feeds)
        logits = res[0][0, -1]
        diffs.append(float(np.abs(logits - ref_logits[step]).max()))
        nxt = int(logits.argmax())
        ort_ids.append(nxt)
        past = dict(zip(names_past, res[1:]))
        pos0 += t
        # teacher-forced with the reference's token, so every step's logits are compared on the same prefix
        x = sess["embed_tokens"].run(None, {"input_ids": np.array([[ref_ids[step]]], np.int64)})[0]
    top2 = [np.sort(l)[-2:] for l in ref_logits]
    margins = [float(b - a_) for a_, b in top2]
    print(f"greedy ids transformers {ref_ids}\n           onnxruntime  {ort_ids}")
    print(f"max abs logit diff per step {[f'{v:.2e}' for v in diffs]} (logit scale {float(np.abs(ref_logits[0]).max()):.2f}); "
          f"top-1/top-2 margins {[f'{m:.3f}' for m in margins]}")
    ok = max(diffs) <= a.tol and ort_ids == ref_ids and feat_diff <= a.tol
    ref = {
        "note": "scripts/export_smolvlm_onnx.py: transformers Idefics3ForConditionalGeneration f32, greedy, on the python processor's inputs",
        "image": "/fixtures/images/chelsea.png", "prompt": PROMPT, "text": text, "input_ids": seq, "greedy_ids": ref_ids,
        "top1_top2_margins": margins, "pixel_values_shape": list(pv.shape),
        "pixel_values_file": per_image["/fixtures/images/chelsea.png"]["pixel_values_file"],
        "onnxruntime_greedy_ids": ort_ids, "onnxruntime_max_abs_logit_diff": max(diffs), "onnxruntime_max_abs_logit_diff_per_step": diffs,
        "onnxruntime_max_abs_image_features_diff": feat_diff,
        "validated": ok, "images": per_image,
    }
    (out / "reference.json").write_text(json.dumps(ref, indent=1))
    if not ok:
        sys.exit(f"VALIDATION FAILED: max abs logit diff {max(diffs):.3e}, image features {feat_diff:.3e} (tol {a.tol}), "
                 f"ids equal: {ort_ids == ref_ids}")
    print(f"validated: ONNX graphs match transformers (max abs logit diff {max(diffs):.2e}, {a.steps} greedy ids equal) -> {out}")


if __name__ == "__main__":
    main()
