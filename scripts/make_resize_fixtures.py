#!/usr/bin/env python3
"""Goldens for src/processor/resize.rs and the simple (CLIP/SigLIP) image processor, from Pillow / transformers.

1. Pillow `Image.resize` of small random RGB images for every filter (NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX,
   HAMMING), up- and down-sampling, one axis only, and extreme ratios: the exact uint8 outputs.
2. transformers' PIL-backend CLIP processor (`CLIPImageProcessorPil`, shortest_edge 40 + center crop 32, bicubic)
   and SigLIP processor (`SiglipImageProcessorPil`, exact 48x48, bilinear) on tests/fixtures/images/chelsea.png.
3. a 128x96 crop of chelsea (box 160,60 .. 288,156; `crop.pixels`) encoded as JPEG (quality 90, 4:2:0) and WebP
   (lossless) by Pillow, with Pillow's decoded pixels: how far the `image` crate's decoders are from libjpeg-turbo /
   libwebp.

Writes tests/fixtures/processor/resize.{json,safetensors}, chelsea_q90.jpg, chelsea_lossless.webp.
"""
import io
import json
import os

import numpy as np
import PIL
import safetensors.numpy
import transformers
from PIL import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "processor")
FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
# (src_w, src_h, dst_w, dst_h)
SIZES = [(23, 17, 9, 31), (40, 30, 13, 7), (7, 5, 64, 48), (50, 20, 50, 9), (31, 31, 100, 31), (97, 3, 5, 3),
         (16, 16, 16, 16), (3, 40, 1, 1),
         # Pillow 13 runs the vertical pass first here (height shrinks by > 2x the width's shrink)
         (30, 64, 28, 16), (20, 50, 60, 10), (64, 128, 48, 32), (45, 60, 44, 58)]


def main():
    rng = np.random.default_rng(1234)
    tensors, cases = {}, []
    for i, (sw, sh, dw, dh) in enumerate(SIZES):
        src = rng.integers(0, 256, (sh, sw, 3), dtype=np.uint8)
        # add structure: a sharp edge and a gradient, so rounding and clipping paths are exercised
        src[:, : sw // 2, 0] = 255
        src[sh // 2 :, :, 1] = np.linspace(0, 255, sw, dtype=np.uint8)[None, :]
        tensors[f"case{i}.src"] = src
        for name, code in FILTERS.items():
            out = np.asarray(Image.fromarray(src).resize((dw, dh), resample=code))
            tensors[f"case{i}.{name}"] = out
        cases.append({"src": [sw, sh], "dst": [dw, dh]})

    img = Image.open(os.path.join(ROOT, "tests", "fixtures", "images", "chelsea.png"))
    img.load()
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    clip_cfg = {"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 32}, "resample": 3,
                "do_center_crop": True, "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255,
                "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711], "do_convert_rgb": True}
    clip = CLIPImageProcessorPil(**clip_cfg)
    tensors["clip.pixel_values"] = np.asarray(clip(images=[img], return_tensors="np")["pixel_values"], np.float32)
    siglip_cfg = {"size": {"height": 48, "width": 48}, "resample": 2, "do_resize": True, "do_rescale": True,
                  "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
                  "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True}
    siglip = SiglipImageProcessorPil(**siglip_cfg)
    tensors["siglip.pixel_values"] = np.asarray(siglip(images=[img], return_tensors="np")["pixel_values"], np.float32)

    crop = img.crop((160, 60, 160 + 128, 60 + 96))  # the cat's face: edges and fur
    tensors["crop.pixels"] = np.asarray(crop)
    jpg = os.path.join(OUT, "chelsea_q90.jpg")
    crop.save(jpg, "JPEG", quality=90)
    tensors["jpeg.pil_decoded"] = np.asarray(Image.open(jpg).convert("RGB"))
    webp = os.path.join(OUT, "chelsea_lossless.webp")
    crop.save(webp, "WEBP", lossless=True)
    tensors["webp.pil_decoded"] = np.asarray(Image.open(webp).convert("RGB"))

    meta = {
        "producer": "scripts/make_resize_fixtures.py",
        "versions": {"pillow": PIL.__version__, "transformers": transformers.__version__, "numpy": np.__version__},
        "filters": FILTERS,
        "resize_cases": cases,
        "resize_layout": "caseN.src (h, w, 3) uint8; caseN.<filter> = np.asarray(Image.fromarray(src).resize((dw, dh), filter))",
        "clip": {"class": "CLIPImageProcessorPil", "config": clip_cfg, "shape": list(tensors["clip.pixel_values"].shape)},
        "siglip": {"class": "SiglipImageProcessorPil", "config": siglip_cfg,
                   "shape": list(tensors["siglip.pixel_values"].shape)},
        "decoders": "crop.pixels = chelsea.png[60:156, 160:288]; jpeg.pil_decoded / webp.pil_decoded: Pillow's decode of chelsea_q90.jpg / chelsea_lossless.webp (encodings of that crop)",
    }
    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                                os.path.join(OUT, "resize.safetensors"), metadata={"producer": meta["producer"]})
    with open(os.path.join(OUT, "resize.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    for f_ in sorted(os.listdir(OUT)):
        print(f_, os.path.getsize(os.path.join(OUT, f_)))


if __name__ == "__main__":
    main()
