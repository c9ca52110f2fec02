//! Elementwise kernels (`shaders/elementwise.wgsl`): add and mul with row broadcast, scale, GELU (tanh and erf),
//! SiLU, and the SwiGLU gate `silu(gate) * up`.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, Binding, DType, PipelineKey, Recorder, Tensor};

use super::{expect_dtype, params};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    b_len: u32,
    alpha: f32,
    _pad: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    GeluTanh,
    GeluErf,
    Silu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Mul,
    /// `silu(a) * b`
    SwiGlu,
}

fn launch(rec: &mut Recorder, entry: &'static str, binary: bool, p: Params, bindings: &[Binding]) -> Result<()> {
    let key = PipelineKey::new("elementwise", entry).define_if(binary, "BINARY").constant("WG", WG);
    let grid = grid_1d(p.n.div_ceil(WG), rec.ctx().caps.max_workgroups_per_dim);
    rec.dispatch(&key, &params(&p), bindings, grid)
}

/// `out = f(a)`.
pub fn unary(rec: &mut Recorder, op: Unary, a: &Tensor) -> Result<Tensor> {
    expect_dtype("unary", a, DType::F32)?;
    let out = rec.empty(&a.shape, DType::F32)?;
    let entry = match op {
        Unary::GeluTanh => "gelu_tanh_fn",
        Unary::GeluErf => "gelu_erf_fn",
        Unary::Silu => "silu_fn",
    };
    let p = Params { n: a.numel() as u32, b_len: 1, alpha: 0.0, _pad: 0 };
    launch(rec, entry, false, p, &[a.into(), (&out).into()])?;
    Ok(out)
}

/// `out = a * alpha`.
pub fn scale(rec: &mut Recorder, a: &Tensor, alpha: f32) -> Result<Tensor> {
    expect_dtype("scale", a, DType::F32)?;
    let out = rec.empty(&a.shape, DType::F32)?;
    let p = Params { n: a.numel() as u32, b_len: 1, alpha, _pad: 0 };
    launch(rec, "scale", false, p, &[a.into(), (&out).into()])?;
    Ok(out)
}

/// `out = a ∘ b`, where `b` has as many elements as `a` or as one row of it (broadcast over rows).
pub fn binary(rec: &mut Recorder, op: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    expect_dtype("binary", a, DType::F32)?;
    expect_dtype("binary", b, DType::F32)?;
    let (n, bl) = (a.numel(), b.numel());
    if bl == 0 || (bl != n && bl != a.cols()) {
        return Err(Error::Shape {
            op: "binary",
            detail: format!("b {:?} must match a {:?} or its last dim", b.shape, a.shape),
        });
    }
    let out = rec.empty(&a.shape, DType::F32)?;
    let entry = match op {
        Binary::Add => "add",
        Binary::Mul => "mul",
        Binary::SwiGlu => "swiglu",
    };
    let p = Params { n: n as u32, b_len: bl as u32, alpha: 0.0, _pad: 0 };
    launch(rec, entry, true, p, &[a.into(), b.into(), (&out).into()])?;
    Ok(out)
}

/// `silu(gate) * up` for rows `[gate | up]`: `a [.., 2F]` → `[.., F]` (the MLP after one product with the gate
/// and up weights stacked).
pub fn swiglu_halves(rec: &mut Recorder, a: &Tensor) -> Result<Tensor> {
    expect_dtype("swiglu_halves", a, DType::F32)?;
    if a.shape.is_empty() || a.cols() % 2 != 0 {
        return Err(Error::Shape {
            op: "swiglu_halves",
            detail: format!("rows must be [gate | up] of even length, got {:?}", a.shape),
        });
    }
    let half = a.cols() / 2;
    let mut shape = a.shape.clone();
    *shape.last_mut().unwrap() = half;
    let out = rec.empty(&shape, DType::F32)?;
    let n = a.numel() / 2;
    if n == 0 {
        return Ok(out);
    }
    let p = Params { n: n as u32, b_len: half as u32, alpha: 0.0, _pad: 0 };
    launch(rec, "swiglu_halves", false, p, &[a.into(), (&out).into()])?;
    Ok(out)
}

pub fn add(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, Binary::Add, a, b)
}

pub fn mul(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, Binary::Mul, a, b)
}

// ---- CPU references ------------------------------------------------------------------------------------------

pub fn cpu_gelu_tanh(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())) as f32
}

/// erf via its Maclaurin series / continued fraction in f64: an independent formulation from the shader's.
pub fn cpu_erf(x: f64) -> f64 {
    if x.abs() < 3.0 {
        // series: erf x = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let mut sum = 0.0f64;
        let mut term = x;
        let mut n = 0.0f64;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 3.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
            if n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // asymptotic continued fraction for erfc
        let z = x.abs();
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (z + f);
        }
        let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f);
        (1.0 - erfc).copysign(x)
    }
}

pub fn cpu_gelu_erf(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + cpu_erf(x / std::f64::consts::SQRT_2))) as f32
}

pub fn cpu_silu(x: f32) -> f32 {
    let x = x as f64;
    (x / (1.0 + (-x).exp())) as f32
}

pub fn cpu_unary(op: Unary, a: &[f32]) -> Vec<f32> {
    let f = match op {
        Unary::GeluTanh => cpu_gelu_tanh,
        Unary::GeluErf => cpu_gelu_erf,
        Unary::Silu => cpu_silu,
    };
    a.iter().map(|&x| f(x)).collect()
}

pub fn cpu_binary(op: Binary, a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter()
        .enumerate()
        .map(|(i, &x)| {
            let y = b[i % b.len()];
            match op {
                Binary::Add => x + y,
                Binary::Mul => x * y,
                Binary::SwiGlu => cpu_silu(x) * y,
            }
        })
        .collect()
}
