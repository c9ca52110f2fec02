//! Model file loading: byte sources and the two weight formats (GGUF, safetensors), with the CPU side of the
//! ggml block quantization formats. No GPU code lives here.
//!
//! Everything reads through [`WeightSource`], a small synchronous, object-safe trait over random-access bytes:
//! parsers read the header piece by piece and then each tensor on its own, never the whole file, so a model
//! can stream to the GPU tensor by tensor without ever being held whole in (wasm) memory.
//!
//! - [`gguf`]: GGUF v2/v3 (llama.cpp) — <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>
//! - [`safetensors`]: safetensors, single file or sharded — <https://github.com/huggingface/safetensors>
//! - [`quant`]: Q8_0 / Q4_0 / Q4_1 blocks (bit-exact with ggml), f16/bf16 conversion, GPU layout.
//!
//! All parsers treat their input as hostile: every length and offset is checked against the source's size with
//! overflow-checked arithmetic before anything is allocated or read, and errors are typed
//! ([`Error::Format`], [`Error::UnsupportedDtype`], [`Error::MissingTensor`], [`Error::BadTensor`]).
//!
//! [`source`] holds the trait, its implementations and [`DType`]; they are re-exported here.

pub mod gguf;
pub mod onnx;
pub mod quant;
pub mod safetensors;
pub mod source;

pub(crate) use source::ChunkReader;
#[cfg(not(target_arch = "wasm32"))]
pub use source::FileSource;
#[cfg(target_arch = "wasm32")]
pub use source::JsBytesSource;
pub use source::{DType, MemorySource, WeightSource};
