//! Rotary position embedding (`shaders/rope.wgsl`). The cos/sin table is computed here in f64 from the model's
//! inverse frequencies (which carry any rope scaling), uploaded once per model, and indexed by position.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DType, GpuContext, PipelineKey, Recorder, Tensor};

use super::{expect_dtype, params};

/// Which pairs of a head's dims rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Hugging Face `rotate_half`: (i, i + D/2).
    RotateHalf,
    /// Meta / GGUF: (2i, 2i + 1).
    Interleaved,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    heads: u32,
    dim: u32,
    pos0: u32,
    max_pos: u32,
    kv_heads: u32,
    _p: [u32; 2],
}

/// The table for `max_pos` positions: `[cos (max_pos, D/2) | sin (max_pos, D/2)]`.
pub fn cpu_cos_sin_table(inv_freq: &[f64], max_pos: usize) -> Vec<f32> {
    let h = inv_freq.len();
    let mut t = vec![0f32; 2 * max_pos * h];
    for pos in 0..max_pos {
        for (i, f) in inv_freq.iter().enumerate() {
            // like PyTorch: the angle is formed in f32 (pos * inv_freq), then cos/sin taken exactly
            let angle = (pos as f32 * *f as f32) as f64;
            t[pos * h + i] = angle.cos() as f32;
            t[max_pos * h + pos * h + i] = angle.sin() as f32;
        }
    }
    t
}

/// Uploads the cos/sin table; returns a [2, max_pos, D/2] tensor.
pub fn cos_sin_table(ctx: &GpuContext, inv_freq: &[f64], max_pos: usize) -> Result<Tensor> {
    let t = cpu_cos_sin_table(inv_freq, max_pos);
    ctx.upload_f32(&t, &[2, max_pos, inv_freq.len()])
}

/// Rotates x [T, H, D] (positions pos0..pos0+T) with the table from [`cos_sin_table`].
pub fn rope(rec: &mut Recorder, x: &Tensor, table: &Tensor, pos0: usize, layout: RopeLayout) -> Result<Tensor> {
    expect_dtype("rope", x, DType::F32)?;
    let [t, h, d] = x.shape[..] else {
        return Err(Error::Shape { op: "rope", detail: format!("x must be [T, H, D], got {:?}", x.shape) });
    };
    let [2, max_pos, half] = table.shape[..] else {
        return Err(Error::Shape { op: "rope", detail: format!("table must be [2, P, D/2], got {:?}", table.shape) });
    };
    if d % 2 != 0 || half * 2 != d {
        return Err(Error::Shape { op: "rope", detail: format!("head dim {d} vs table half-dim {half}") });
    }
    if pos0 + t > max_pos {
        return Err(Error::ContextOverflow { tokens: pos0 + t, context: max_pos });
    }
    let out = rec.empty(&x.shape, DType::F32)?;
    let p = Params {
        t: t as u32,
        heads: h as u32,
        dim: d as u32,
        pos0: pos0 as u32,
        max_pos: max_pos as u32,
        kv_heads: 0,
        _p: [0; 2],
    };
    let key = PipelineKey::new("rope", "main")
        .define_if(layout == RopeLayout::Interleaved, "INTERLEAVED")
        .constant("WG", 256);
    let grid = grid_1d(((t * h * half) as u32).div_ceil(256), rec.ctx().caps.max_workgroups_per_dim);
    rec.dispatch(&key, &params(&p), &[x.into(), table.into(), (&out).into()], grid)?;
    Ok(out)
}

/// The attention's inputs from one fused q/k/v projection: `qkv [T, (H + 2·Hkv)·D]` (rows `[q | k | v]`) at
/// positions `pos0..pos0+T`. Returns q rotated (`[T, H, D]`); k rotated and v as they are go straight into the
/// caches `[Tmax, Hkv, D]` at rows `pos0..` (what [`rope`] twice and two `write_kv` copies do, in one kernel).
#[allow(clippy::too_many_arguments)]
pub fn rope_qkv(
    rec: &mut Recorder,
    qkv: &Tensor,
    table: &Tensor,
    pos0: usize,
    layout: RopeLayout,
    heads: usize,
    k_cache: &Tensor,
    v_cache: &Tensor,
) -> Result<Tensor> {
    const OP: &str = "rope_qkv";
    expect_dtype(OP, qkv, DType::F32)?;
    let t = qkv.rows();
    let QkvDims { kv_heads, d, max_pos } =
        check_qkv(OP, qkv.shape.len(), qkv.cols(), t, table, pos0, heads, k_cache, v_cache)?;
    let half = d / 2;
    let out = rec.empty(&[t, heads, d], DType::F32)?;
    if t == 0 {
        return Ok(out);
    }
    let p = Params {
        t: t as u32,
        heads: heads as u32,
        dim: d as u32,
        pos0: pos0 as u32,
        max_pos: max_pos as u32,
        kv_heads: kv_heads as u32,
        _p: [0; 2],
    };
    let key = PipelineKey::new("rope", "qkv")
        .define("QKV")
        .define_if(layout == RopeLayout::Interleaved, "INTERLEAVED")
        .constant("WG", 256);
    let pairs = t * (heads + 2 * kv_heads) * half;
    let grid = grid_1d((pairs as u32).div_ceil(256), rec.ctx().caps.max_workgroups_per_dim);
    let bindings = [qkv.into(), table.into(), (&out).into(), k_cache.into(), v_cache.into()];
    rec.dispatch(&key, &params(&p), &bindings, grid)?;
    Ok(out)
}

/// What [`check_qkv`] finds in the caches and the table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QkvDims {
    pub kv_heads: usize,
    /// the head dim
    pub d: usize,
    /// positions in the table
    pub max_pos: usize,
}

/// The checks of [`rope_qkv`] (and of the GEMV that fuses it, `ops::matmul::linear_rope_qkv`): f32 tensors, caches
/// `[Tmax, Hkv, D]`, a projection of `rank` dims and `width` = (heads + 2 Hkv) D columns, a table `[2, P, D/2]`,
/// positions `pos0 .. pos0 + t` inside both.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_qkv(
    op: &'static str,
    rank: usize,
    cols: usize,
    t: usize,
    table: &Tensor,
    pos0: usize,
    heads: usize,
    k_cache: &Tensor,
    v_cache: &Tensor,
) -> Result<QkvDims> {
    for t in [table, k_cache, v_cache] {
        expect_dtype(op, t, DType::F32)?;
    }
    let [tmax, kv_heads, d] = k_cache.shape[..] else {
        return Err(Error::Shape { op, detail: format!("k cache must be [Tmax, Hkv, D], got {:?}", k_cache.shape) });
    };
    if v_cache.shape != k_cache.shape {
        return Err(Error::Shape { op, detail: format!("v cache {:?} vs k cache {:?}", v_cache.shape, k_cache.shape) });
    }
    let width = (heads + 2 * kv_heads) * d;
    if rank != 2 || cols != width {
        return Err(Error::Shape {
            op,
            detail: format!(
                "qkv must be [T, {width}] ({heads} q + 2 × {kv_heads} kv heads of {d}), got {rank} dims of {cols}"
            ),
        });
    }
    let [2, max_pos, half] = table.shape[..] else {
        return Err(Error::Shape { op, detail: format!("table must be [2, P, D/2], got {:?}", table.shape) });
    };
    if d % 2 != 0 || half * 2 != d {
        return Err(Error::Shape { op, detail: format!("head dim {d} vs table half-dim {half}") });
    }
    if pos0 + t > max_pos.min(tmax) {
        return Err(Error::ContextOverflow { tokens: pos0 + t, context: max_pos.min(tmax) });
    }
    Ok(QkvDims { kv_heads, d, max_pos })
}

/// Reference: rotation in f64 with angles formed like PyTorch's.
pub fn cpu_rope(
    x: &[f32],
    t: usize,
    h: usize,
    d: usize,
    inv_freq: &[f64],
    pos0: usize,
    layout: RopeLayout,
) -> Vec<f32> {
    let mut out = x.to_vec();
    let half = d / 2;
    for ti in 0..t {
        for hi in 0..h {
            let base = (ti * h + hi) * d;
            for i in 0..half {
                let angle = ((pos0 + ti) as f32 * inv_freq[i] as f32) as f64;
                let (s, c) = angle.sin_cos();
                let (a, b) = match layout {
                    RopeLayout::RotateHalf => (base + i, base + i + half),
                    RopeLayout::Interleaved => (base + 2 * i, base + 2 * i + 1),
                };
                let (x0, x1) = (x[a] as f64, x[b] as f64);
                out[a] = (x0 * c - x1 * s) as f32;
                out[b] = (x1 * c + x0 * s) as f32;
            }
        }
    }
    out
}

/// Standard inverse frequencies `theta^(-2i/D)`.
pub fn inv_freq(theta: f64, dim: usize) -> Vec<f64> {
    (0..dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / dim as f64)).collect()
}
