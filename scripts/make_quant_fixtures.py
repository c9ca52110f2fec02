#!/usr/bin/env python3
"""Fixtures for src/loader: ggml block quantization goldens and tiny GGUF / safetensors files.

Uses the PyPI `gguf` package (llama.cpp's gguf-py; its Q8_0 quantizer is documented as bit-exact with ggml-quants.c
`quantize_row_q8_0_ref`, its Q4_0/Q4_1 quantizers follow `quantize_row_q4_{0,1}_ref`) and `safetensors`.

    pip install gguf numpy safetensors torch     # torch only for the BF16 safetensors tensor
    python3 scripts/make_quant_fixtures.py

Writes (all small, committed):
  tests/fixtures/quant/input_f32.bin           [6, 96] f32 LE, row-major (seeded; see make_input)
  tests/fixtures/quant/{q8_0,q4_0,q4_1}.bin    gguf.quants.quantize(input, type): ggml blocks, row by row
  tests/fixtures/quant/{q8_0,q4_0,q4_1}_deq.bin gguf.quants.dequantize(those bytes): [6, 96] f32
  tests/fixtures/tiny.gguf                     GGUFWriter: metadata of every value type + arrays, tensors
                                               F32/F16/BF16/Q8_0/Q4_0/Q4_1 (of the same input), a 1-D F32 bias and
                                               a Q4_K tensor (unsupported by us: must give a typed error)
  tests/fixtures/tiny.safetensors              safetensors.torch: F32, F16, BF16, I64, I32 + __metadata__
  tests/fixtures/tiny_sharded/                 two shards + model.safetensors.index.json
Re-running reproduces every file byte for byte, except that safetensors writes the `__metadata__` keys in hash order.
The Rust side (tests/loader.rs) hard-codes the metadata values written here: keep them in sync.
"""
import importlib.metadata
import json
import os
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
QDIR = os.path.join(ROOT, "quant")
ROWS, COLS = 6, 96


def make_input() -> np.ndarray:
    """[6, 96] f32: normal, all-zero, tiny (f16-subnormal scales), large, ties/rounding edge cases, mixed signs."""
    rng = np.random.default_rng(20240611)
    x = np.zeros((ROWS, COLS), dtype=np.float32)
    x[0] = rng.standard_normal(COLS)
    # row 1: all zeros (d = 0, id = 0 path)
    x[2] = rng.standard_normal(COLS) * 1e-6  # d underflows to f16 subnormals
    x[3] = rng.standard_normal(COLS) * 3e3  # large, still inside f16 range for d and m
    # row 4: exact halves (round-half-away-from-zero in Q8_0, 8.5 offsets in Q4_0), ties for the max magnitude,
    # a block of one repeated value (Q4_1: d = 0), a block with a single non-zero.
    x[4, :32] = np.linspace(-127, 127, 32, dtype=np.float32) / 2
    x[4, 0], x[4, 5] = -4.0, 4.0
    x[4, 32:64] = 0.75
    x[4, 64:96] = 0.0
    x[4, 80] = -2.5
    x[5] = rng.uniform(0.0, 10.0, COLS)  # all positive (Q4_1 min > 0)
    return x.astype(np.float32)


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main() -> None:
    x = make_input()
    write(os.path.join(QDIR, "input_f32.bin"), x.astype("<f4").tobytes())
    quantized = {}
    for name, qt in [("q8_0", T.Q8_0), ("q4_0", T.Q4_0), ("q4_1", T.Q4_1)]:
        q = gguf.quants.quantize(x, qt)
        assert q.dtype == np.uint8 and q.shape == (ROWS, COLS // 32 * gguf.GGML_QUANT_SIZES[qt][1]), q.shape
        deq = gguf.quants.dequantize(q, qt).astype(np.float32)
        assert deq.shape == x.shape
        quantized[name] = (qt, q)
        write(os.path.join(QDIR, f"{name}.bin"), q.tobytes())
        write(os.path.join(QDIR, f"{name}_deq.bin"), deq.astype("<f4").tobytes())

    # ---- tiny.gguf --------------------------------------------------------------------------------------------
    path = os.path.join(ROOT, "tiny.gguf")
    w = gguf.GGUFWriter(path, arch="tiny")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 0.15625)
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", -1.5e300)
    w.add_bool("test.bool", True)
    w.add_string("test.str", "héllo, wörld ✓")
    w.add_array("test.str_arr", ["a", "", "<0x0A>", "ĠThe"])
    w.add_array("test.i32_arr", [1, -2, 3])
    w.add_array("test.f32_arr", [0.5, -0.25])
    w.add_array("test.nested", [[1, 2], [3]])
    # (GGUFWriter.add_array silently drops empty arrays, so there is no empty one here; see the unit tests.)
    w.add_tensor("f32.weight", x)
    w.add_tensor("f16.weight", x.astype(np.float16))
    w.add_tensor("bf16.weight", gguf.quants.quantize(x, T.BF16), raw_dtype=T.BF16)
    for name, (qt, q) in quantized.items():
        w.add_tensor(f"{name}.weight", q, raw_dtype=qt)
    w.add_tensor("bias", np.arange(7, dtype=np.float32) - 3.0)
    w.add_tensor("q4_k.weight", np.zeros((1, 144), dtype=np.uint8), raw_dtype=T.Q4_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # ---- safetensors ------------------------------------------------------------------------------------------
    import torch
    from safetensors.torch import save_file

    xt = torch.from_numpy(x)
    tensors = {
        "model.f32": xt,
        "model.f16": xt.to(torch.float16),
        "model.bf16": xt.to(torch.bfloat16),
        "model.position_ids": torch.arange(5, dtype=torch.int64).reshape(1, 5),
        "model.i32": torch.tensor([-1, 0, 7], dtype=torch.int32),
        "model.scalar": torch.tensor(2.5, dtype=torch.float32),
    }
    save_file(tensors, os.path.join(ROOT, "tiny.safetensors"), metadata={"format": "pt", "note": "webvlm fixture"})

    shard_dir = os.path.join(ROOT, "tiny_sharded")
    os.makedirs(shard_dir, exist_ok=True)
    shards = {
        "model-00001-of-00002.safetensors": {"a.weight": xt[:3].contiguous(), "a.bias": torch.ones(96)},
        "model-00002-of-00002.safetensors": {"b.weight": xt[3:].to(torch.float16).contiguous()},
    }
    weight_map, total = {}, 0
    for fname, ts in shards.items():
        save_file(ts, os.path.join(shard_dir, fname), metadata={"format": "pt"})
        for k, v in ts.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    with open(os.path.join(shard_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)

    print(f"gguf {importlib.metadata.version('gguf')}, safetensors {importlib.metadata.version('safetensors')}, "
          f"numpy {np.__version__}, torch {torch.__version__}, python {sys.version.split()[0]}: wrote {ROOT}")


if __name__ == "__main__":
    main()
