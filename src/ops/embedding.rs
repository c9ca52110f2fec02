//! Embedding lookup (`shaders/embedding.wgsl`) from f32, f16 or GGUF-quantized tables, dequantizing rows on the
//! fly, so a quantized tied embedding is stored once.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DType, PipelineKey, Recorder, Tensor};

use super::{expect_dtype, params};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    dim: u32,
    vocab: u32,
    fmt: u32,
    scales_off: u32,
    _p: [u32; 3],
}

/// `out[t] = table[ids[t]]`: table [V, D] (f32 / f16 / bf16 / q8_0 / q4_0 / q4_1), ids U32 [T] → [T, D] f32.
/// Ids are checked against V by the caller (they come from the tokenizer); the kernel clamps as a safety net.
pub fn embedding(rec: &mut Recorder, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    expect_dtype("embedding", ids, DType::U32)?;
    let (vocab, dim) = table.dims2()?;
    if vocab == 0 {
        return Err(Error::Shape { op: "embedding", detail: "empty table".into() });
    }
    let t = ids.numel();
    let (define, fmt) = match table.dtype {
        DType::F32 => ("F32", 0),
        DType::F16 => ("F16", 0),
        DType::BF16 => ("BF16", 0),
        DType::Q8_0 => ("QUANT", 0),
        DType::Q4_0 => ("QUANT", 1),
        DType::Q4_1 => ("QUANT", 2),
        d => return Err(Error::UnsupportedDtype { op: "embedding", dtype: d.to_string() }),
    };
    let out = rec.empty(&[t, dim], DType::F32)?;
    let p =
        Params { t: t as u32, dim: dim as u32, vocab: vocab as u32, fmt, scales_off: table.scales_offset, _p: [0; 3] };
    let key = PipelineKey::new("embedding", "main").define(define).constant("WG", 256);
    let grid = grid_1d(((t * dim) as u32).div_ceil(256), rec.ctx().caps.max_workgroups_per_dim);
    rec.dispatch(&key, &params(&p), &[ids.into(), table.into(), (&out).into()], grid)?;
    Ok(out)
}

pub fn cpu_embedding(table: &[f32], dim: usize, ids: &[u32]) -> Vec<f32> {
    ids.iter().flat_map(|&i| table[i as usize * dim..(i as usize + 1) * dim].iter().copied()).collect()
}
