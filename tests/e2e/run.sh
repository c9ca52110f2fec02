#!/usr/bin/env bash
# End-to-end browser tests, self-contained (scripts/test.sh runs this when it exists):
#   1. builds the wasm package (pkg/wasm/, via scripts/build_wasm.sh) and webvlm-server — incremental, so cheap
#      when up to date (E2E_NO_BUILD=1 uses what is there, failing if it is missing);
#   2. `npm install --ignore-scripts` here when node_modules is missing (playwright-core, pinned; it drives Debian's
#      /usr/bin/chromium, nothing is downloaded by Playwright);
#   3. consumer.test.mjs: the npm package as a user installs it (npm pack → install → page importing it);
#   4. demo.test.mjs: the demo page on the real server with the offline default model (skipped with a notice when
#      models/smollm2 is missing: scripts/fetch_real_models.sh). Screenshot: target/e2e/demo.png.
#   5. vlm.test.mjs: the offline VLM (models/offline-vlm, assembled here) answers easy-vqa questions in the page's
#      Web Worker like transformers does (skipped with a notice when its parts are missing).
#   6. eval.test.mjs: `webvlm eval` against the real server and a test judge; the HTML report screenshotted.
# Exits non-zero when any check fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

if [[ -z "${E2E_NO_BUILD:-}" ]]; then
  echo "== building the wasm package (scripts/build_wasm.sh) and webvlm-server"
  scripts/build_wasm.sh
  cargo build --bin webvlm-server --bin webvlm
  # the offline VLM for vlm.test.mjs, when its parts were fetched (scripts/fetch_offline_vlm.sh)
  onnx=models/_pkgs/vit_s_focus.onnx
  gguf=models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  if [[ -f $onnx && -f $gguf ]] && ! [[ models/offline-vlm/model.safetensors -nt assets/offline-vlm/adapter.safetensors ]]; then
    target/debug/webvlm offline-vlm --onnx "$onnx" --gguf "$gguf" --out models/offline-vlm
  fi
fi
for f in pkg/wasm/webvlm_bg.wasm target/debug/webvlm-server target/debug/webvlm; do
  [[ -e $f ]] || { echo "$f is missing; run without E2E_NO_BUILD" >&2; exit 1; }
done
if [[ ! -d "$here/node_modules/playwright-core" ]]; then
  echo "== npm install (tests/e2e)"
  (cd "$here" && npm install --ignore-scripts --no-audit --no-fund)
fi
if [[ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]]; then
  echo "Chromium not found at ${CHROMIUM:-/usr/bin/chromium} (apt-get install chromium)" >&2
  exit 1
fi

status=0
for t in consumer demo vlm eval; do
  echo "== e2e: $t"
  node "$here/$t.test.mjs" || status=1
done
exit $status
