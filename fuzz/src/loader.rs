//! Mirrors `src/loader/mod.rs` minus its `crate::gpu` bridge (paths are relative to fuzz/src/).

#[path = "../../src/loader/gguf.rs"]
pub mod gguf;
#[path = "../../src/loader/quant.rs"]
pub mod quant;
#[path = "../../src/loader/safetensors.rs"]
pub mod safetensors;
#[path = "../../src/loader/source.rs"]
pub mod source;

pub(crate) use source::ChunkReader;
#[cfg(not(target_arch = "wasm32"))]
pub use source::FileSource;
#[cfg(target_arch = "wasm32")]
pub use source::JsBytesSource;
pub use source::{DType, MemorySource, WeightSource};
