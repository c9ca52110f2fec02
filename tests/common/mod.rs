//! Shared by the GPU test files: a device that fails loudly when absent, and a macro that turns one async test
//! into a native `#[test]` (blocking on lavapipe or a real GPU) and a `wasm_bindgen_test` (headless Chromium).
#![allow(dead_code)]

use std::sync::Arc;

use webvlm::generation::{generate, CancelToken, GenerationConfig};
use webvlm::gpu::{GpuContext, GpuOptions, Tensor};
use webvlm::models::Model;

/// Opens the GPU. No adapter is a test failure, never a skip: CI must notice a missing driver.
pub async fn ctx() -> Arc<GpuContext> {
    match GpuContext::new(GpuOptions::default()).await {
        Ok(c) => c,
        Err(e) => {
            panic!("no GPU adapter for the tests ({e}); natively install mesa-vulkan-drivers")
        }
    }
}

/// An f32-only context (no shader-f16, no subgroups) to exercise the fallback paths on any adapter.
pub async fn ctx_plain() -> Arc<GpuContext> {
    let opts = GpuOptions { allow_f16: false, allow_subgroups: false, ..GpuOptions::default() };
    match GpuContext::new(opts).await {
        Ok(c) => c,
        Err(e) => panic!("no GPU adapter for the tests ({e})"),
    }
}

/// `n` greedy tokens from the embeddings `x` of prompt `ids`, with a repetition penalty (1 = off).
pub async fn greedy(
    ctx: &GpuContext,
    model: &Model,
    x: &Tensor,
    ids: &[u32],
    n: usize,
    penalty: f32,
) -> Result<Vec<u32>, String> {
    let mut cache = model.lm.new_cache(ctx).map_err(|e| e.to_string())?;
    let cfg = GenerationConfig { max_new_tokens: n, repetition_penalty: penalty, ..Default::default() };
    let out = generate(ctx, model, &mut cache, x, ids, &cfg, &CancelToken::default(), |_| true)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out.tokens)
}

/// The greedy tokens from `x` (prompt `ids`, no penalty) must be `want` (a reference's), else an error naming
/// `what` with both sequences.
pub async fn expect_greedy(
    ctx: &GpuContext,
    what: &str,
    model: &Model,
    x: &Tensor,
    ids: &[u32],
    want: &[u32],
) -> Result<(), String> {
    let got = greedy(ctx, model, x, ids, want.len(), 1.0).await?;
    if got != want {
        return Err(format!("{what}: greedy tokens differ\n got  {got:?}\n want {want:?}"));
    }
    Ok(())
}

#[macro_export]
macro_rules! gpu_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[cfg(not(target_arch = "wasm32"))]
            #[test]
            fn $name() {
                if let Err(e) = pollster::block_on(super::$name()) {
                    panic!("{e}");
                }
            }
            #[cfg(target_arch = "wasm32")]
            #[wasm_bindgen_test::wasm_bindgen_test]
            async fn $name() {
                if let Err(e) = super::$name().await {
                    panic!("{e}");
                }
            }
        )*
    };
}

/// The real SmolLM2-135M-Instruct GGUF (scripts/fetch_real_models.sh), or `WEBVLM_SMOLLM2_GGUF`. `None` (with a
/// notice) when it is missing, unless `WEBVLM_REQUIRE_REAL=1`: then a missing file fails the test (CI).
#[cfg(not(target_arch = "wasm32"))]
pub fn real_smollm2_gguf() -> Option<std::path::PathBuf> {
    let p = std::env::var("WEBVLM_SMOLLM2_GGUF").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("WEBVLM_REQUIRE_REAL").as_deref() == Ok("1") {
        panic!("{} is missing; run scripts/fetch_real_models.sh", p.display());
    }
    eprintln!("NOTICE: real-weights test skipped: {} not found (run scripts/fetch_real_models.sh)", p.display());
    None
}
