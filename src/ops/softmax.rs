//! Numerically stable row softmax (`shaders/softmax.wgsl`). Attention has its own fused online softmax; this one
//! serves sampling-side probabilities and tests.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DType, PipelineKey, Recorder, Tensor};

use super::{expect_dtype, params};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    _p: [u32; 2],
}

/// Longest row the invocation-per-row variant takes: it walks a row twice in one invocation, and llvmpipe ends an
/// invocation's loops past 65535 iterations.
pub const ROWS_MAX_COLS: usize = 16384;

/// Softmax over the last dim of x [.., C]: on CPU adapters an invocation per row (no barriers) for rows of up to
/// [`ROWS_MAX_COLS`], else (and on GPUs) a workgroup per row (tree reductions).
pub fn softmax(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    softmax_with(rec, x, per_invocation_default(rec, x))
}

/// The variant [`softmax`] and [`softmax_in_place`] pick: an invocation per row on CPU adapters where it fits.
fn per_invocation_default(rec: &Recorder, x: &Tensor) -> bool {
    rec.ctx().caps.cpu_adapter && x.cols() <= ROWS_MAX_COLS
}

/// [`softmax`] with the kernel variant chosen by the caller (tests cover both on any adapter).
pub fn softmax_with(rec: &mut Recorder, x: &Tensor, rows_per_invocation: bool) -> Result<Tensor> {
    let out = rec.empty(&x.shape, DType::F32)?;
    run(rec, x, Some(&out), rows_per_invocation)?;
    Ok(out)
}

/// [`softmax`] written over x (no second buffer of x's size: attention's score blocks on CPU adapters).
pub fn softmax_in_place(rec: &mut Recorder, x: &Tensor) -> Result<()> {
    softmax_in_place_with(rec, x, per_invocation_default(rec, x))
}

/// [`softmax_in_place`] with the kernel variant chosen by the caller.
pub fn softmax_in_place_with(rec: &mut Recorder, x: &Tensor, rows_per_invocation: bool) -> Result<()> {
    run(rec, x, None, rows_per_invocation)
}

/// One dispatch of `softmax.wgsl` over the rows of x into `out`, or over x itself.
fn run(rec: &mut Recorder, x: &Tensor, out: Option<&Tensor>, rows_per_invocation: bool) -> Result<()> {
    expect_dtype("softmax", x, DType::F32)?;
    if rows_per_invocation && x.cols() > ROWS_MAX_COLS {
        return Err(Error::Shape {
            op: "softmax",
            detail: format!("an invocation per row takes rows of at most {ROWS_MAX_COLS}, got {:?}", x.shape),
        });
    }
    let p = Params { rows: x.rows() as u32, cols: x.cols() as u32, _p: [0; 2] };
    let key = PipelineKey::new("softmax", "main")
        .define_if(rows_per_invocation, "ROWS")
        .define_if(rows_per_invocation && x.cols() % 4 == 0, "VEC4")
        .define_if(out.is_none(), "IN_PLACE")
        .constant("WG", 64);
    let groups = if rows_per_invocation { p.rows.div_ceil(64) } else { p.rows };
    let grid = grid_1d(groups, rec.ctx().caps.max_workgroups_per_dim);
    match out {
        Some(o) => rec.dispatch(&key, &params(&p), &[x.into(), o.into()], grid),
        None => rec.dispatch(&key, &params(&p), &[x.into()], grid),
    }
}

pub fn cpu_softmax(x: &[f32], cols: usize) -> Vec<f32> {
    x.chunks(cols)
        .flat_map(|row| {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            row.iter().map(move |&v| ((v as f64 - m).exp() / s) as f32)
        })
        .collect()
}
