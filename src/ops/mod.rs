//! Kernels: one Rust file per kernel family (`shaders/<family>.wgsl` beside it), each with its dispatch
//! function(s) and a CPU reference (`cpu_*`) that the tests compare against.
//!
//! Conventions: ops record into a [`Recorder`](crate::gpu::Recorder) and return new tensors (from the pool);
//! nothing is submitted or read back here. Shapes are row-major, outermost first.

pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod matmul;
pub mod norm;
pub mod rope;
pub mod sample;
pub mod softmax;
pub mod vision;

use crate::error::{Error, Result};
use crate::gpu::{DType, Tensor};

/// Largest transient block a layer over many rows (the ViT at 1024 patches) holds at once: a group of heads'
/// attention scores (`attention::attention_gemm`), one row chunk of an MLP's hidden activation
/// (`nn::Mlp::forward_residual`). About one activation of such a layer (1024 × 768 f32 = 3 MiB): with quantized
/// weights, the activations are most of what a forward pass adds to weights + KV cache.
pub const BLOCK_BYTES: usize = 4 << 20;

pub(crate) fn expect_dtype(op: &'static str, t: &Tensor, dtype: DType) -> Result<()> {
    if t.dtype != dtype {
        return Err(Error::UnsupportedDtype { op, dtype: format!("{} (expected {dtype})", t.dtype) });
    }
    Ok(())
}

/// Packs a `#[repr(C)]` parameter struct for the uniform block.
pub(crate) fn params<T: bytemuck::Pod>(p: &T) -> Vec<u8> {
    bytemuck::bytes_of(p).to_vec()
}
