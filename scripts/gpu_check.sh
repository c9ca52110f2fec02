#!/usr/bin/env bash
# Native checks on a machine with a real GPU, from binaries built elsewhere: the GPU test binaries (kernels,
# models) and the benchmarks (kernel_bench: copy / GEMV / GEMM roofline; `webvlm bench` on a SmolVLM-256M-shaped
# random checkpoint generated there by scripts/make_smolvlm256m_random.py, which needs torch + transformers).
#
#   scripts/gpu_check.sh build          here: build release binaries + test binaries into .devbin/ (stripped);
#                                       GPU_CHECK_BASE=<a webvlm binary of another commit> ships it as webvlm-base
#                                       for an end-to-end A/B (decode and prefill, old / new alternated twice)
#   scripts/gpu_check.sh run [OUTDIR]   on the GPU machine: benchmarks, then tests; JSON and logs in OUTDIR
#                                       (GPU_CHECK_ONLY=copy,gemv: kernel_bench's sections; default all)
#
# The test binaries find their fixtures through the absolute path they were built in (CARGO_MANIFEST_DIR); `run`
# links that path to this checkout when it differs. Nothing here is part of `scripts/test.sh` (CI has no GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tests="${GPU_CHECK_TESTS:-kernels_matmul kernels_rows kernels_attention kernels_elementwise kernels_sample kernels_vision models gpu_profile}"

case "${1:-}" in
build)
  set -e
  cargo build --release --bin webvlm --bin kernel_bench
  rm -rf .devbin && mkdir -p .devbin
  for t in $tests; do
    exe=$(cargo test --release --no-run --test "$t" --message-format=json 2>/dev/null |
      python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and m.get("executable") and t.get("kind") == ["test"] and t.get("name") == sys.argv[1]:
        print(m["executable"])' "$t" | tail -1)
    cp "$exe" ".devbin/$t"
  done
  cp target/release/webvlm target/release/kernel_bench .devbin/
  if [ -n "${GPU_CHECK_BASE:-}" ]; then cp "$GPU_CHECK_BASE" .devbin/webvlm-base; fi
  strip .devbin/*
  echo "$root" >.devbin/built_in
  # the device tool carries at most 64 MiB: ship the binaries compressed
  tar -C .devbin -cJf /tmp/devbin.txz . && rm -rf .devbin && mkdir .devbin && mv /tmp/devbin.txz .devbin/
  du -sh .devbin
  ;;
run)
  out=${2:-${OUT:-/tmp/gpu_check}}
  mkdir -p "$out"
  [ -f .devbin/devbin.txz ] && tar -C .devbin -xJf .devbin/devbin.txz && rm .devbin/devbin.txz
  built_in=$(cat .devbin/built_in)
  if [ "$built_in" != "$root" ] && [ ! -e "$built_in" ]; then
    mkdir -p "$(dirname "$built_in")" && ln -s "$root" "$built_in"
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | tee -a "$out/log.txt"
  .devbin/webvlm info 2>&1 | tee -a "$out/log.txt" | head -30
  summary=()
  # at most 8 files come back from the device tool: kernels.json, bench-*.json (3), tests.log, log.txt
  timeout 120 .devbin/kernel_bench ${GPU_CHECK_ONLY:+--only "$GPU_CHECK_ONLY"} --gemv-mib 256 --reps 5 --target-s 0.1 >"$out/kernels.json" 2>>"$out/log.txt"
  summary+=("kernel_bench rc=$?")
  grep -aE '^(copy|gemv|gemm|attention)' "$out/log.txt" | head -40
  m=/tmp/smolvlm-256m-random
  [ -d "$m" ] || timeout 120 python3 scripts/make_smolvlm256m_random.py --out "$m" >>"$out/log.txt" 2>&1
  for dt in q4_1 q8_0 auto; do  # auto: bf16 as stored → f16 with shader-f16
    timeout 90 .devbin/webvlm bench --model "$m" --image tests/fixtures/images/chelsea.png --prompt-tokens 128 \
      --decode-tokens 128 --runs 3 --dtype "$dt" --copy-mib 256 --profile >"$out/bench-$dt.json" 2>>"$out/log.txt"
    summary+=("bench $dt rc=$?")
  done
  if [ -x .devbin/webvlm-base ]; then
    # ab.txt: per bench run (scripts/bench_summary.py), the binary, decode and prefill tok/s, GPU ms per token
    for round in 1 2; do
      for b in webvlm-base webvlm; do
        timeout 60 ".devbin/$b" bench --model "$m" --prompt-tokens 64 --decode-tokens 128 --runs 3 --dtype q4_1 \
          --profile >/tmp/ab.json 2>>"$out/log.txt"
        python3 scripts/bench_summary.py "$b" /tmp/ab.json >>"$out/ab.txt" || true
      done
    done
    cat "$out/ab.txt"
  fi
  for t in $tests; do
    s=$(date +%s)
    timeout 90 ".devbin/$t" --test-threads=4 >"$out/test-$t.log" 2>&1
    rc=$?
    line=$(grep -aE '^test result:' "$out/test-$t.log" | tail -1)
    summary+=("$t rc=$rc $(($(date +%s) - s))s $line")
    grep -aE '^test .* FAILED$' "$out/test-$t.log" | head -20
  done
  cat "$out"/test-*.log >"$out/tests.log"
  rm -f "$out"/test-*.log
  python3 - "$out" <<'PY' || true
import json, sys, glob
for f in sorted(glob.glob(sys.argv[1] + "/bench-*.json")):
    try:
        b = json.load(open(f))
    except Exception as e:
        print(f, "unreadable", e); continue
    flat = {k: v for k, v in b.items() if not isinstance(v, (dict, list))}
    print(f.split("/")[-1], json.dumps(flat)[:600])
PY
  printf '%s\n' "${summary[@]}"
  ;;
*)
  sed -n 2,9p "$0"
  exit 2
  ;;
esac
