#!/usr/bin/env python3
"""One line per `webvlm bench` JSON: label, decode tok/s of each timed run, prefill tok/s, pipelining, GPU peak.

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
    print(label, "decode", [round(v, 1) for v in b.get("decode_tok_s_runs", [])],
          "prefill", [round(v) for v in b.get("prefill_tok_s_runs", [])],
          "pipelined", b.get("pipelined"), "peak_ratio", round(b.get("gpu_peak_vs_weights_plus_kv", 0), 3))
