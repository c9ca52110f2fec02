//! Vision-tower ops (`shaders/vision.wgsl`): the ViT patch embedding as unfold (im2col) + GEMM, and Idefics3's
//! pixel shuffle (space-to-depth) that the SmolVLM connector applies before its projection.
//!
//! Position embeddings are added by the model (`elementwise::add` of the `[N, D]` table, interpolated on the CPU
//! at load time when the image size differs).

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DType, PipelineKey, Recorder, Tensor};

use super::{expect_dtype, matmul, params};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    a: u32,
    b: u32,
    c: u32,
    d: u32,
    n: u32,
    _pad: [u32; 3],
}

fn launch(rec: &mut Recorder, entry: &'static str, stage: &str, p: Params, x: &Tensor, out: &Tensor) -> Result<()> {
    let key = PipelineKey::new("vision", entry).define(stage).constant("WG", WG);
    let grid = grid_1d(p.n.div_ceil(WG), rec.ctx().caps.max_workgroups_per_dim);
    rec.dispatch(&key, &params(&p), &[x.into(), out.into()], grid)
}

/// Unfolds `pixels` `[C, H, W]` into `[N, C·p·p]` patch rows (N = (H/p)·(W/p), row-major over the patch grid;
/// column order c, ky, kx — a Conv2d weight `[D, C, p, p]` flattened). Pixels past the last whole patch are dropped.
pub fn unfold(rec: &mut Recorder, pixels: &Tensor, patch: usize) -> Result<Tensor> {
    expect_dtype("unfold", pixels, DType::F32)?;
    let (c, h, w) = match pixels.shape[..] {
        [c, h, w] => (c, h, w),
        _ => {
            return Err(Error::Shape {
                op: "unfold",
                detail: format!("pixels must be [C, H, W], got {:?}", pixels.shape),
            })
        }
    };
    if patch == 0 || h < patch || w < patch {
        return Err(Error::Shape {
            op: "unfold",
            detail: format!("patch size {patch} does not fit image {:?}", pixels.shape),
        });
    }
    let n = (h / patch) * (w / patch);
    let cols = c * patch * patch;
    let out = rec.empty(&[n, cols], DType::F32)?;
    let p = Params { a: c as u32, b: h as u32, c: w as u32, d: patch as u32, n: (n * cols) as u32, _pad: [0; 3] };
    launch(rec, "unfold", "UNFOLD", p, pixels, &out)?;
    Ok(out)
}

/// The ViT patch embedding `Conv2d(C, D, kernel = stride = patch)` followed by `.flatten(2).transpose(1, 2)`:
/// `pixels` `[C, H, W]` (one image, channel-first), `w` `[D, C·p·p]` (the conv weight flattened row-major; any
/// weight dtype `linear` takes), `bias` `[D]` → `[N, D]`, N = (H/p)·(W/p) patches in row-major order.
pub fn patch_embed(rec: &mut Recorder, pixels: &Tensor, w: &Tensor, bias: &Tensor, patch: usize) -> Result<Tensor> {
    let cols = pixels.shape.first().copied().unwrap_or(0) * patch * patch;
    if w.shape.len() != 2 || w.shape[1] != cols {
        return Err(Error::Shape {
            op: "patch_embed",
            detail: format!("weight {:?} must be [D, {cols}] for pixels {:?} and patch {patch}", w.shape, pixels.shape),
        });
    }
    if bias.shape[..] != [w.shape[0]] {
        return Err(Error::Shape {
            op: "patch_embed",
            detail: format!("bias {:?} must be [{}]", bias.shape, w.shape[0]),
        });
    }
    let x = unfold(rec, pixels, patch)?;
    matmul::linear(rec, &x, w, Some(bias))
}

/// Idefics3 / SmolVLM pixel shuffle: `x` `[g·g, D]` (a g×g token grid, row-major) → `[g·g/r², D·r²]`, each output
/// token the concatenation of an r×r block of input tokens, row by row. Port of
/// `Idefics3Connector.pixel_shuffle` (transformers, modeling_idefics3.py).
pub fn pixel_shuffle(rec: &mut Recorder, x: &Tensor, grid: usize, r: usize) -> Result<Tensor> {
    expect_dtype("pixel_shuffle", x, DType::F32)?;
    let (n, d) = x.dims2()?;
    if n != grid * grid || r == 0 || grid % r != 0 {
        return Err(Error::Shape {
            op: "pixel_shuffle",
            detail: format!("x {:?} must be [grid², D] with grid {grid} a multiple of the scale factor {r}", x.shape),
        });
    }
    let out = rec.empty(&[n / (r * r), d * r * r], DType::F32)?;
    let p = Params { a: grid as u32, b: r as u32, c: d as u32, d: 0, n: (n * d) as u32, _pad: [0; 3] };
    launch(rec, "pixel_shuffle", "SHUFFLE", p, x, &out)?;
    Ok(out)
}

// ---- CPU references ------------------------------------------------------------------------------------------

/// Reference for [`unfold`]: `pixels` `[c, h, w]` → `[N, c·p·p]`.
pub fn cpu_unfold(pixels: &[f32], c: usize, h: usize, w: usize, patch: usize) -> Vec<f32> {
    let (gh, gw) = (h / patch, w / patch);
    let mut out = Vec::with_capacity(gh * gw * c * patch * patch);
    for py in 0..gh {
        for px in 0..gw {
            for ch in 0..c {
                for ky in 0..patch {
                    for kx in 0..patch {
                        out.push(pixels[(ch * h + py * patch + ky) * w + px * patch + kx]);
                    }
                }
            }
        }
    }
    out
}

/// Reference for [`patch_embed`] as a direct convolution (f64 sums): `w` `[dout, c·p·p]`, `bias` `[dout]`.
#[allow(clippy::too_many_arguments)]
pub fn cpu_patch_embed(
    pixels: &[f32],
    c: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    bias: &[f32],
    dout: usize,
    patch: usize,
) -> Vec<f32> {
    let (gh, gw) = (h / patch, w / patch);
    let mut out = vec![0f32; gh * gw * dout];
    for py in 0..gh {
        for px in 0..gw {
            for o in 0..dout {
                let mut s = bias[o] as f64;
                for ch in 0..c {
                    for ky in 0..patch {
                        for kx in 0..patch {
                            let wi = ((o * c + ch) * patch + ky) * patch + kx;
                            s += weight[wi] as f64 * pixels[(ch * h + py * patch + ky) * w + px * patch + kx] as f64;
                        }
                    }
                }
                out[(py * gw + px) * dout + o] = s as f32;
            }
        }
    }
    out
}

/// Reference for [`pixel_shuffle`], written as the PyTorch view/permute chain it ports:
/// `[g, g, D]` → view `[g, g/r, D·r]` → permute → `[g/r, g, D·r]` → reshape `[g/r, g/r, D·r²]` → permute →
/// `[g/r, g/r, D·r²]` → reshape `[g²/r², D·r²]`.
pub fn cpu_pixel_shuffle(x: &[f32], grid: usize, r: usize, d: usize) -> Vec<f32> {
    let g = grid;
    // step 1: view [g, g/r, D*r] is free; permute(0, 2, 1, 3) → a[xb][y][e'] = x[y][xb][e']
    let dr = d * r;
    let mut a = vec![0f32; g * g * d];
    for y in 0..g {
        for xb in 0..g / r {
            for e in 0..dr {
                a[(xb * g + y) * dr + e] = x[(y * (g / r) + xb) * dr + e];
            }
        }
    }
    // step 2: reshape [g/r, g/r, D*r²] is free on the contiguous a; permute(0, 2, 1, 3) swaps the two grid axes
    let drr = d * r * r;
    let mut out = vec![0f32; g * g * d];
    for xb in 0..g / r {
        for yb in 0..g / r {
            for f in 0..drr {
                out[(yb * (g / r) + xb) * drr + f] = a[(xb * (g / r) + yb) * drr + f];
            }
        }
    }
    out
}
