//! Row normalizations (`shaders/norm.wgsl`): RMSNorm (Llama-family decoders) and LayerNorm (ViT towers).

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, Binding, DType, PipelineKey, Recorder, Tensor};

use super::{expect_dtype, params};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    add_unit_offset: u32,
}

fn check(op: &'static str, x: &Tensor, w: &Tensor) -> Result<()> {
    expect_dtype(op, x, DType::F32)?;
    expect_dtype(op, w, DType::F32)?;
    if w.numel() != x.cols() {
        return Err(Error::Shape { op, detail: format!("weight {:?} vs input {:?}", w.shape, x.shape) });
    }
    Ok(())
}

/// Which kernel a normalization runs ([`rms_norm_with`] and the like force one; tests use it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKernel {
    /// One invocation per row on CPU adapters where the row is whole vec4s, a workgroup per row otherwise.
    Auto,
    /// A workgroup per row with a tree reduction (GPUs).
    Workgroup,
    /// One invocation per row, vec4 loads, no barriers (`norm.wgsl` ROWS; needs C % 4 == 0).
    PerRow,
}

/// One dispatch of `norm.wgsl` (`variant`: "" or "LAYER") over the rows of x.
fn run(
    rec: &mut Recorder,
    op: &'static str,
    variant: &str,
    x: &Tensor,
    eps: f32,
    bindings: &[Binding],
    kernel: NormKernel,
) -> Result<()> {
    const WG: u32 = 64;
    let (rows, cols) = (x.rows(), x.cols());
    let per_row = match kernel {
        NormKernel::Auto => rec.ctx().caps.cpu_adapter && cols % 4 == 0,
        NormKernel::Workgroup => false,
        NormKernel::PerRow if cols % 4 != 0 => {
            return Err(Error::Shape { op, detail: format!("the per-row kernel needs C % 4 == 0, C = {cols}") })
        }
        NormKernel::PerRow => true,
    };
    let p = Params { rows: rows as u32, cols: cols as u32, eps, add_unit_offset: 0 };
    let key = PipelineKey::new("norm", if per_row { "rows" } else { "main" })
        .define_if(!variant.is_empty(), variant)
        .define_if(per_row, "ROWS")
        .constant("WG", WG);
    let groups = if per_row { p.rows.div_ceil(WG) } else { p.rows };
    let grid = grid_1d(groups, rec.ctx().caps.max_workgroups_per_dim);
    rec.dispatch(&key, &params(&p), bindings, grid)
}

/// `x / sqrt(mean(x²) + eps) * w` over the last dim. x [.., C], w [C].
pub fn rms_norm(rec: &mut Recorder, x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    rms_norm_with(rec, x, w, eps, NormKernel::Auto)
}

/// [`rms_norm`] with a chosen kernel.
pub fn rms_norm_with(rec: &mut Recorder, x: &Tensor, w: &Tensor, eps: f32, kernel: NormKernel) -> Result<Tensor> {
    check("rms_norm", x, w)?;
    let out = rec.empty(&x.shape, DType::F32)?;
    run(rec, "rms_norm", "", x, eps, &[x.into(), w.into(), (&out).into()], kernel)?;
    Ok(out)
}

/// `(x - mean) / sqrt(var + eps) * w + b` over the last dim (biased variance, like PyTorch).
pub fn layer_norm(rec: &mut Recorder, x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    layer_norm_with(rec, x, w, b, eps, NormKernel::Auto)
}

/// [`layer_norm`] with a chosen kernel.
pub fn layer_norm_with(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f32,
    kernel: NormKernel,
) -> Result<Tensor> {
    check("layer_norm", x, w)?;
    check("layer_norm", x, b)?;
    let out = rec.empty(&x.shape, DType::F32)?;
    run(rec, "layer_norm", "LAYER", x, eps, &[x.into(), w.into(), b.into(), (&out).into()], kernel)?;
    Ok(out)
}

pub fn cpu_rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let c = w.len();
    x.chunks(c)
        .flat_map(|row| {
            let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / c as f64;
            let inv = 1.0 / (ms + eps as f64).sqrt();
            row.iter().zip(w).map(move |(&v, &g)| (v as f64 * inv * g as f64) as f32)
        })
        .collect()
}

pub fn cpu_layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let c = w.len();
    x.chunks(c)
        .flat_map(|row| {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
            let inv = 1.0 / (var + eps as f64).sqrt();
            row.iter()
                .zip(w.iter().zip(b))
                .map(move |(&v, (&g, &bb))| ((v as f64 - mean) * inv * g as f64 + bb as f64) as f32)
        })
        .collect()
}
