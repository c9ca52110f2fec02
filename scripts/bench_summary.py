#!/usr/bin/env python3
"""One line per `webvlm bench` JSON: label, decode tok/s of each timed run, prefill tok/s, pipelining, GPU peak,
and, where the run was profiled (`--profile`), GPU ms per decoded token, the GEMVs' share of it, and dispatches.

    python3 scripts/bench_summary.py LABEL bench.json [LABEL bench.json ...]
"""
import json
import sys

args = sys.argv[1:]
for label, path in zip(args[::2], args[1::2]):
    try:
        b = json.load(open(path))
    except (OSError, ValueError) as e:
        print(label, "unreadable:", e)
        continue
    line = [label, "decode", [round(v, 1) for v in b.get("decode_tok_s_runs", [])],
            "prefill", [round(v) for v in b.get("prefill_tok_s_runs", [])],
            "pipelined", b.get("pipelined"), "peak_ratio", round(b.get("gpu_peak_vs_weights_plus_kv", 0), 3)]
    prof = (b.get("profile") or {}).get("decode") or {}
    if prof:
        ks = prof.get("kernels", [])
        gemv = sum(k["gpu_ms_per_step"] for k in ks if k["kernel"].startswith("gemv"))
        line += ["gpu_ms_per_step", round(prof.get("gpu_ms_per_step", 0), 3), "gemv_ms", round(gemv, 3),
                 "dispatches", round(sum(k["dispatches_per_step"] for k in ks))]
    print(*line)
