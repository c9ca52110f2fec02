//! Bad model input gives typed errors with clear messages, never a panic: a config that disagrees with the
//! weights, an unknown architecture, a missing tensor, a truncated weight file, a prompt longer than the context,
//! and an out-of-vocabulary token id.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use webvlm::generation::{generate, CancelToken, GenerationConfig};
use webvlm::gpu::Recorder;
use webvlm::models::{MemoryFiles, Model};
use webvlm::nn::LoadOptions;
use webvlm::Error;

const CONFIG: &str = include_str!("fixtures/models/llama/config.json");
const WEIGHTS: &[u8] = include_bytes!("fixtures/models/llama/model.safetensors");

fn files(config: &str, weights: &[u8]) -> MemoryFiles {
    let mut m = BTreeMap::new();
    m.insert("config.json".to_string(), Arc::new(config.as_bytes().to_vec()));
    m.insert("model.safetensors".to_string(), Arc::new(weights.to_vec()));
    MemoryFiles(m)
}

fn load(config: &str, weights: &[u8]) -> Result<Model, Error> {
    let ctx = pollster::block_on(common::ctx());
    Model::load_hf(&ctx, &files(config, weights), LoadOptions::default(), 64)
}

fn patch(key: &str, value: serde_json::Value) -> String {
    let mut c: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
    c[key] = value;
    c.to_string()
}

#[test]
fn config_that_disagrees_with_the_weights() {
    let err = load(&patch("hidden_size", 96.into()), WEIGHTS).err().expect("must fail");
    let msg = err.to_string();
    assert!(matches!(err, Error::BadTensor { .. }), "{err:?}");
    assert!(msg.contains("embed_tokens") && msg.contains("96"), "message should name the tensor and shapes: {msg}");
}

#[test]
fn impossible_head_layout() {
    let err = load(&patch("num_key_value_heads", 3.into()), WEIGHTS).err().expect("must fail");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[test]
fn unknown_architecture() {
    let err = load(&patch("model_type", "mamba".into()), WEIGHTS).err().expect("must fail");
    assert!(matches!(err, Error::UnsupportedModel(ref m) if m.contains("mamba")), "{err:?}");
}

#[test]
fn unsupported_rope_type() {
    let err = load(&patch("rope_parameters", serde_json::json!({"rope_type": "yarn", "rope_theta": 10000.0})), WEIGHTS)
        .err()
        .expect("must fail");
    assert!(matches!(err, Error::Config(ref m) if m.contains("yarn")), "{err:?}");
}

/// Absurd config values are typed errors before they size anything: a layer count of 10^15 (it once sized the
/// layer vector up front: an allocation failure aborted the process), heads that leave head_dim 0, rope
/// parameters that give NaN or infinite frequencies.
#[test]
fn absurd_config_values() {
    let err = load(&patch("num_hidden_layers", 1_000_000_000_000_000u64.into()), WEIGHTS).err().expect("must fail");
    assert!(matches!(err, Error::MissingTensor { .. } | Error::BadTensor { .. }), "{err:?}");
    let err = load(&patch("head_dim", 0.into()), WEIGHTS).err().expect("must fail");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    for rope in [
        serde_json::json!({"rope_type": "default", "rope_theta": 0.0}),
        serde_json::json!({"rope_type": "linear", "rope_theta": 10000.0, "factor": 0.0}),
        serde_json::json!({"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 2.0,
                           "high_freq_factor": 2.0, "original_max_position_embeddings": 64}),
    ] {
        let err = load(&patch("rope_parameters", rope.clone()), WEIGHTS).err().expect("must fail");
        assert!(matches!(err, Error::Config(ref m) if m.contains("rope")), "{rope}: {err:?}");
    }
}

/// Products of config dimensions that overflow (heads × head_dim here) are config errors, not a debug-build
/// panic or a wrapped size in release.
#[test]
fn config_products_that_overflow() {
    let mut c: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
    c["num_attention_heads"] = (1u64 << 62).into();
    c["num_key_value_heads"] = (1u64 << 62).into();
    c["head_dim"] = 64.into();
    let err = load(&c.to_string(), WEIGHTS).err().expect("must fail");
    assert!(matches!(err, Error::Config(ref m) if m.contains("head_dim") && m.contains("overflows")), "{err:?}");
    let err = load(&patch("intermediate_size", 0.into()), WEIGHTS).err().expect("must fail");
    assert!(matches!(err, Error::Config(ref m) if m.contains("intermediate_size")), "{err:?}");
}

/// The tiny Idefics3 GGUF pair with the mmproj's u32 metadata value `key` replaced by `value`.
fn load_gguf_vlm_with(key: &str, value: u32) -> Result<Model, Error> {
    let mut mmproj = include_bytes!("fixtures/models/idefics3_gguf/mmproj.gguf").to_vec();
    // a GGUF key-value: the key's bytes, the value type (4 = u32), the value
    let at = mmproj.windows(key.len()).position(|w| w == key.as_bytes()).expect("key in the fixture") + key.len();
    assert_eq!(mmproj[at..at + 4], 4u32.to_le_bytes(), "{key} is a u32");
    mmproj[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
    let ctx = pollster::block_on(common::ctx());
    let text = include_bytes!("fixtures/models/idefics3_gguf/model.gguf").to_vec();
    Model::load_gguf(&ctx, Box::new(text), Some(Box::new(mmproj)), LoadOptions::default(), 64)
}

/// A GGUF mmproj whose pixel-shuffle scale factor is 0 or does not divide the patch grid (8 here) is a config error
/// that names it (it was unchecked on this path: a weight-shape mismatch, or a pixel shuffle of a grid it does not
/// divide); the fixture's own value (2) loads.
#[test]
fn mmproj_scale_factor_must_divide_the_grid() {
    let key = "clip.vision.projector.scale_factor";
    for bad in [0, 3] {
        let err = load_gguf_vlm_with(key, bad).err().expect("must fail");
        assert!(
            matches!(err, Error::Config(ref m) if m.contains("scale_factor") && m.contains("grid")),
            "{bad}: {err:?}"
        );
    }
    load_gguf_vlm_with(key, 2).map_err(|e| e.to_string()).expect("the fixture's value loads");
    let err = load_gguf_vlm_with("clip.vision.patch_size", 0).err().expect("must fail");
    assert!(matches!(err, Error::Config(ref m) if m.contains("patch_size")), "{err:?}");
}

#[test]
fn config_that_is_not_json() {
    let err = load("{not json", WEIGHTS).err().expect("must fail");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[test]
fn missing_tensor() {
    let err = load(&patch("num_hidden_layers", 3.into()), WEIGHTS).err().expect("must fail");
    assert!(matches!(err, Error::MissingTensor { ref name } if name.contains("layers.2")), "{err:?}");
}

#[test]
fn truncated_weights() {
    for cut in [0, 7, 100, WEIGHTS.len() / 2, WEIGHTS.len() - 1] {
        let err = load(CONFIG, &WEIGHTS[..cut]).err().unwrap_or_else(|| panic!("cut at {cut} must fail"));
        assert!(matches!(err, Error::Format { .. } | Error::Io(_)), "cut {cut}: {err:?}");
    }
}

#[test]
fn prompt_longer_than_the_context() {
    let ctx = pollster::block_on(common::ctx());
    let model = Model::load_hf(&ctx, &files(CONFIG, WEIGHTS), LoadOptions::default(), 16).unwrap();
    let ids: Vec<u32> = (0..40).collect();
    let mut rec = Recorder::new(&ctx);
    let x = model.embed_prompt(&mut rec, &ids, &[]).unwrap();
    let mut cache = model.lm.new_cache(&ctx).unwrap();
    let cfg = GenerationConfig { max_new_tokens: 4, ..Default::default() };
    let err = pollster::block_on(generate(&ctx, &model, &mut cache, &x, &ids, &cfg, &CancelToken::default(), |_| true))
        .err()
        .expect("must fail");
    assert!(matches!(err, Error::ContextOverflow { tokens: 40, context: 16 }), "{err:?}");
    // generation that reaches the end of the context stops cleanly instead
    let ids: Vec<u32> = (0..14).collect();
    let mut rec = Recorder::new(&ctx);
    let x = model.embed_prompt(&mut rec, &ids, &[]).unwrap();
    rec.submit().unwrap();
    let mut cache = model.lm.new_cache(&ctx).unwrap();
    let cfg = GenerationConfig { max_new_tokens: 100, ..Default::default() };
    let out = pollster::block_on(generate(&ctx, &model, &mut cache, &x, &ids, &cfg, &CancelToken::default(), |_| true))
        .unwrap();
    assert_eq!(out.stop, webvlm::generation::StopReason::ContextFull);
    assert_eq!(cache.len, 16);
    // the same with the repetition penalty and no token limit: its history is sized by the context, not the limit
    let mut cache = model.lm.new_cache(&ctx).unwrap();
    let cfg = GenerationConfig { max_new_tokens: usize::MAX, repetition_penalty: 1.2, ..Default::default() };
    let out = pollster::block_on(generate(&ctx, &model, &mut cache, &x, &ids, &cfg, &CancelToken::default(), |_| true))
        .unwrap();
    assert_eq!((out.stop, out.tokens.len(), cache.len), (webvlm::generation::StopReason::ContextFull, 3, 16));
}

#[test]
fn token_id_outside_the_vocabulary() {
    let ctx = pollster::block_on(common::ctx());
    let model = Model::load_hf(&ctx, &files(CONFIG, WEIGHTS), LoadOptions::default(), 16).unwrap();
    let mut rec = Recorder::new(&ctx);
    let err = model.embed_prompt(&mut rec, &[1, 2, 100_000], &[]).err().expect("must fail");
    assert!(matches!(err, Error::Tokenizer(_)), "{err:?}");
}

#[test]
fn cancellation_before_the_first_token() {
    let ctx = pollster::block_on(common::ctx());
    let model = Model::load_hf(&ctx, &files(CONFIG, WEIGHTS), LoadOptions::default(), 16).unwrap();
    let mut rec = Recorder::new(&ctx);
    let x = model.embed_prompt(&mut rec, &[1, 2, 3], &[]).unwrap();
    rec.submit().unwrap();
    let mut cache = model.lm.new_cache(&ctx).unwrap();
    let cancel = CancelToken::default();
    cancel.cancel();
    let err = pollster::block_on(generate(
        &ctx,
        &model,
        &mut cache,
        &x,
        &[1, 2, 3],
        &GenerationConfig::default(),
        &cancel,
        |_| true,
    ))
    .err();
    assert!(matches!(err, Some(Error::Cancelled)), "{err:?}");
}
