#!/usr/bin/env python3
"""Image-preprocessing goldens for Idefics3/SmolVLM from transformers' Idefics3 image processor + processor.

Input image: scikit-image's `data.chelsea()` (a real photo, 451x300 RGB, "Stefan van der Walt's cat"), saved
losslessly as tests/fixtures/images/chelsea.png (not downscaled; ~220 KB).  The pipeline reads the PNG back with
Pillow so the Rust side starts from exactly the same pixels.

Processor: transformers 5 has two Idefics3 image-processor backends: `Idefics3ImageProcessor` (torchvision
backend; needs torchvision, not installed here) and `Idefics3ImageProcessorPil` (PIL/NumPy).  We use the PIL one:
it is the original ("slow") algorithm, resizing uint8 images with PIL's LANCZOS.

Variants (all with SmolVLM-256M-Instruct's preprocessor_config settings unless stated):
  smolvlm_512   size.longest_edge 2048, max_image_size 512, splitting on  -> 3x4 tiles + global, (13,3,512,512).
                Too big to commit: saved as per-tile mean/std/first-64-values + the full tensor of tile 0 and of the
                global tile (last).
  split_64      size.longest_edge 128, max_image_size 64, splitting on    -> 2x2 tiles + global, full f32 tensor.
  nosplit_64    do_image_splitting False, max_image_size 64               -> 1 image (1,3,64,64), full f32 tensor.
Plus the prompt expansion for one image, from `Idefics3Processor` (a real processor instance built around a tiny
word-level tokenizer that only knows the special tokens): both the expanded text and the token pattern.

Writes tests/fixtures/images/chelsea.png, tests/fixtures/images/idefics3_processor.{json,safetensors}.
"""
import hashlib
import importlib.metadata
import io
import json
import os
import re
import sys

import numpy as np
import PIL
import safetensors.numpy
import skimage
import skimage.data
import transformers
from PIL import Image
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "images")

# SmolVLM-256M-Instruct preprocessor_config.json (as published) -- the settings we construct the processor with
SMOLVLM_PREPROCESSOR = {
    "do_convert_rgb": True,
    "do_image_splitting": True,
    "do_normalize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "max_image_size": {"longest_edge": 512},
    "resample": 1,  # PIL LANCZOS
    "rescale_factor": 1 / 255,
    "size": {"longest_edge": 2048},
}
SMOLVLM_IMAGE_SEQ_LEN = 64  # processor_config.json of SmolVLM-256M: (512/16)^2 / 4^2


def make_processor(**over):
    kw = dict(SMOLVLM_PREPROCESSOR)
    kw.update(over)
    return Idefics3ImageProcessorPil(**kw), kw


def run(proc, img):
    enc = proc(images=[img], return_tensors="np", return_row_col_info=True)
    pv = np.asarray(enc["pixel_values"], dtype=np.float32)
    mask = np.asarray(enc["pixel_attention_mask"])
    rows, cols = int(enc["rows"][0][0]), int(enc["cols"][0][0])
    return pv, mask, rows, cols


def tiny_tokenizer():
    """A word-level tokenizer holding only the Idefics3 special tokens (enough for Idefics3Processor)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"]
    specials += [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    words = ["User", ":", "Describe", "this", "image", ".", "Assistant", "\n"]
    vocab = {t: i for i, t in enumerate(specials + words)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": specials[1:]})
    return fast, vocab


def prompt_expansion(rows, cols, image_seq_len, img_proc):
    from transformers import Idefics3Processor

    tok, vocab = tiny_tokenizer()
    proc = Idefics3Processor(image_processor=img_proc, tokenizer=tok, image_seq_len=image_seq_len)
    image_inputs = {"rows": [[rows]], "cols": [[cols]]}
    text = proc.replace_image_token(image_inputs, 0)
    return text, proc


def to_levels(pv):
    lv = np.rint((pv.astype(np.float64) + 1.0) * 127.5)
    assert lv.min() >= 0 and lv.max() <= 255
    lv = lv.astype(np.uint8)
    back = ((lv.astype(np.float64) / 255.0 - 0.5) / 0.5).astype(np.float32)
    err = float(np.abs(back - pv).max())
    assert err < 1e-6, err
    return lv


def tile_summary(pv):
    tiles = pv.reshape(-1, *pv.shape[-3:])
    return [
        {
            "mean": float(t.mean()),
            "std": float(t.std()),
            "per_channel_mean": [float(x) for x in t.mean(axis=(1, 2))],
            "first64_ch0_row0": [float(x) for x in t[0, 0, :64]],
        }
        for t in tiles
    ]


def main():
    os.makedirs(OUT, exist_ok=True)
    arr = skimage.data.chelsea()
    png = os.path.join(OUT, "chelsea.png")
    Image.fromarray(arr).save(png, "PNG", optimize=True)
    img = Image.open(png)
    img.load()
    assert np.array_equal(np.asarray(img), arr)
    png_sha = hashlib.sha256(open(png, "rb").read()).hexdigest()

    tensors = {}
    meta = {
        "image": {
            "file": "tests/fixtures/images/chelsea.png",
            "source": "scikit-image skimage.data.chelsea() (photo of the cat Chelsea by Stefan van der Walt, CC0 per scikit-image docs); saved losslessly, not resized",
            "width": arr.shape[1], "height": arr.shape[0], "mode": img.mode, "sha256": png_sha,
        },
        "processor_class": "transformers Idefics3ImageProcessorPil (PIL backend; torchvision backend Idefics3ImageProcessor not used: torchvision not installed)",
        "smolvlm_256m_preprocessor_config": SMOLVLM_PREPROCESSOR,
        "algorithm": [
            "1. convert RGB; image kept uint8 HWC->CHW",
            "2. do_resize: longest edge -> size.longest_edge (aspect kept; other edge = int(longest/aspect), +1 if odd), PIL LANCZOS on uint8 (upsamples small images!)",
            "3a. splitting: resize_for_vision_encoder: long edge -> ceil(L/M)*M, short = int(long/aspect) then ceil(.../M)*M (aspect NOT exactly kept), PIL LANCZOS uint8 (a 2nd resample of the already resized uint8 image)",
            "3b. split into rows x cols crops of MxM (row-major, r then c), then the global image = the step-3a image resized to MxM (3rd resample, from the 3a image, not from the original); tiles first, global LAST. If the 3a image is <= M on both sides: no split, rows=cols=0, just that image.",
            "3'. no splitting: resize to exactly MxM (aspect not kept), PIL LANCZOS uint8",
            "4. rescale x/255 then normalize (x-0.5)/0.5, in float32 (rescale and normalize done in float64 numpy then cast? see dtype note)",
            "5. pad every image to the max H,W in the batch with 0 (bottom/right); pixel_attention_mask 1 on real pixels. Padding images (all-zero) are dropped by the model.",
        ],
        "variants": {},
        "versions": {
            "transformers": transformers.__version__, "pillow": PIL.__version__, "numpy": np.__version__,
            "scikit-image": skimage.__version__, "python": sys.version.split()[0],
        },
    }

    # --- smolvlm_512: real settings
    proc, kw = make_processor()
    pv, mask, rows, cols = run(proc, img)
    n = pv.shape[1]
    text, full_proc = prompt_expansion(rows, cols, SMOLVLM_IMAGE_SEQ_LEN, proc)
    levels = to_levels(pv)  # exact uint8 levels the normalized floats came from
    tensors["smolvlm_512.tile0_crop128_levels"] = levels[0, 0, :, :128, :128]
    tensors["smolvlm_512.global_crop128_levels"] = levels[0, -1, :, :128, :128]
    meta["variants"]["smolvlm_512"] = {
        "settings": kw,
        "pixel_values_shape": list(pv.shape),
        "pixel_attention_mask_shape": list(mask.shape),
        "pixel_attention_mask_all_ones": bool(mask.all()),
        "rows": rows, "cols": cols, "n_images": n,
        "tile_order": "row-major tiles (r, c), then the global image last",
        "sizes": {"after_resize": _size_after_resize(arr, 2048), "after_resize_for_vision_encoder": [rows * 512, cols * 512]},
        "saved": ("full tensor too big (13x3x512x512 f32 = 40 MB): per tile, sha256 of its uint8 levels "
                  "(levels = round((pixel_values+1)*127.5), shape (3,512,512) C-order, exact: "
                  "pixel_values == f32((levels/255 - 0.5)/0.5)), mean/std/per-channel mean/first 64 values of channel 0 "
                  "row 0; plus the top-left 128x128 crop of tile 0 and of the global tile as uint8 levels "
                  "(smolvlm_512.tile0_crop128_levels, smolvlm_512.global_crop128_levels, (3,128,128)). "
                  "pixel_attention_mask is all ones (no padding: every tile is 512x512)."),
        "tile_levels_sha256": [hashlib.sha256(np.ascontiguousarray(t).tobytes()).hexdigest() for t in levels[0]],
        "tile_summary": tile_summary(pv),
        "image_seq_len": SMOLVLM_IMAGE_SEQ_LEN,
        "prompt_expansion": text,
        "max_abs": float(np.abs(pv).max()),
    }

    # --- split_64: small splitting variant, full tensor
    proc, kw = make_processor(size={"longest_edge": 128}, max_image_size={"longest_edge": 64})
    pv, mask, rows, cols = run(proc, img)
    text_s, _ = prompt_expansion(rows, cols, 4, proc)
    tensors["split_64.pixel_values"] = pv
    tensors["split_64.pixel_attention_mask"] = mask.astype(np.uint8)
    meta["variants"]["split_64"] = {
        "settings": kw, "pixel_values_shape": list(pv.shape), "rows": rows, "cols": cols, "n_images": pv.shape[1],
        "sizes": {"after_resize": _size_after_resize(arr, 128), "after_resize_for_vision_encoder": [rows * 64, cols * 64]},
        "saved": "full split_64.pixel_values (1, n, 3, 64, 64) f32 and mask (u8)",
        "tile_summary": tile_summary(pv),
        "prompt_expansion_image_seq_len_4": text_s,
    }

    # --- nosplit_64: no splitting, tiny square
    proc, kw = make_processor(do_image_splitting=False, max_image_size={"longest_edge": 64})
    pv, mask, rows, cols = run(proc, img)
    tensors["nosplit_64.pixel_values"] = pv
    tensors["nosplit_64.pixel_attention_mask"] = mask.astype(np.uint8)
    text_n, _ = prompt_expansion(rows, cols, 4, proc)
    meta["variants"]["nosplit_64"] = {
        "settings": kw, "pixel_values_shape": list(pv.shape), "rows": rows, "cols": cols,
        "note": "do_resize to longest 2048 happens FIRST (upsampling 451->2048), then a 2nd LANCZOS resize to 64x64 (aspect not kept)",
        "saved": "full nosplit_64.pixel_values (1,1,3,64,64) and mask",
        "tile_summary": tile_summary(pv),
        "prompt_expansion_image_seq_len_4": text_n,
    }

    # --- full processor call (text + image) with the tiny tokenizer, smolvlm settings, to show the whole pattern
    proc, _ = make_processor()
    _, full_proc = prompt_expansion(0, 0, SMOLVLM_IMAGE_SEQ_LEN, proc)
    prompt = "<|im_start|>User:<image>Describe this image.<end_of_utterance>\nAssistant:"
    enc = full_proc(text=[prompt], images=[[img]], return_tensors="np")
    tok = full_proc.tokenizer
    ids = enc["input_ids"][0].tolist()
    meta["processor_call"] = {
        "how": "Idefics3Processor(image_processor=Idefics3ImageProcessorPil(SmolVLM settings), tokenizer=<tiny word-level "
               "tokenizer of the special tokens>, image_seq_len=64)(text=[prompt], images=[[img]])",
        "prompt": prompt,
        "expanded_text_via_replace_image_token": meta["variants"]["smolvlm_512"]["prompt_expansion"],
        "n_input_ids": len(ids),
        "n_image_tokens": ids.count(tok.convert_tokens_to_ids("<image>")),
        "expanded_prompt_rle": _rle([t for t in re.split(r"(<[^>]+>|\n)", full_proc.replace_image_token(
            {"rows": [[meta["variants"]["smolvlm_512"]["rows"]]], "cols": [[meta["variants"]["smolvlm_512"]["cols"]]]}, 0)) if t]),
        "pixel_values_shape": list(np.asarray(enc["pixel_values"]).shape),
    }
    meta["prompt_expansion_source"] = (
        "Idefics3Processor.replace_image_token (transformers 5.x processing_idefics3.py), the method __call__ uses; "
        "rows/cols from the image processor (return_row_col_info=True). rows=cols=0 -> "
        "'<fake_token_around_image><global-img>' + '<image>'*L + '<fake_token_around_image>'; otherwise for each row: "
        "for each col '<fake_token_around_image><row_{r}_col_{c}>' + '<image>'*L, then '\\n' after each row; then "
        "'\\n<fake_token_around_image><global-img>' + '<image>'*L + '<fake_token_around_image>'"
    )
    meta["recommended_tolerance"] = (
        "A PIL-exact Lanczos port (ImagingResample, 8-bit fixed-point coefficients, per-pass uint8 rounding/clamping, "
        "horizontal pass first then vertical) reproduces pixel_values exactly (differences only from f32 rescale: "
        "<= 1e-6). A generic f32 Lanczos3 will differ by a few uint8 levels: expect max |d| up to ~0.05 (~6 levels of "
        "2/255) and mean |d| < 0.01. Shapes, rows/cols and the prompt expansion must match exactly."
    )

    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                                os.path.join(OUT, "idefics3_processor.safetensors"),
                                metadata={"producer": "scripts/make_processor_fixtures.py"})
    meta["tensors"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in tensors.items()}
    with open(os.path.join(OUT, "idefics3_processor.json"), "w") as f:
        json.dump(meta, f, indent=1)
    for k, v in meta["variants"].items():
        print(k, v["pixel_values_shape"], "rows", v["rows"], "cols", v["cols"], v.get("sizes"))
    print("processor call:", meta["processor_call"]["expanded_prompt_rle"][:12], "...")
    for f in os.listdir(OUT):
        print(f, os.path.getsize(os.path.join(OUT, f)))


def _size_after_resize(arr, longest):
    h, w = arr.shape[:2]
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        _resize_output_size_rescale_to_max_len, _resize_output_size_scale_below_upper_bound, MAX_IMAGE_SIZE)
    hh, ww = _resize_output_size_rescale_to_max_len(h, w, max_len=longest)
    hh, ww = _resize_output_size_scale_below_upper_bound(hh, ww, max_len=MAX_IMAGE_SIZE)
    return [hh, ww]


def _rle(tokens):
    out = []
    for t in tokens:
        if out and out[-1][0] == t:
            out[-1][1] += 1
        else:
            out.append([t, 1])
    return [f"{t}x{n}" if n > 1 else t for t, n in out]


if __name__ == "__main__":
    main()
