//! Shared by the GPU test files: a device that fails loudly when absent, and a macro that turns one async test
//! into a native `#[test]` (blocking on lavapipe or a real GPU) and a `wasm_bindgen_test` (headless Chromium).
#![allow(dead_code)]

use std::sync::Arc;

use webvlm::gpu::{GpuContext, GpuOptions};

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
