//! webvlm: a vision-language model runtime on WebGPU (browser, via wasm) and wgpu (native), from one code base,
//! and a multimodal search pipeline built on it. See ARCHITECTURE.md for the layers.

pub mod convert;
pub mod engine;
pub mod error;
pub mod eval;
pub mod generation;
pub mod gpu;
pub mod loader;
pub mod models;
pub mod nn;
pub mod ops;
pub mod pipeline;
pub mod processor;
pub mod retrieval;
#[cfg(not(target_arch = "wasm32"))]
pub mod server;
pub mod testing;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use error::{Error, Result};
