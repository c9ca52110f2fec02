//! GEMV and GEMM kernels (`webvlm::ops::matmul`) against the f64 CPU reference on random odd shapes, for every
//! weight dtype and both paths; the GPU dequantization against the `gguf` package's fixtures; the typed errors.
//!
//! Tolerance: the reference is exact up to one final f32 rounding, and the weights it sees are the CPU
//! dequantization of exactly the bytes the GPU reads, so the only difference is the GPU's f32 accumulation. Any
//! summation order of K products (plus the bias, and the per-block scale product of Q8_0/Q4_0) has a rounding
//! error of at most γ_{K+8}·Σ|x·w| with γ_n = n·u/(1 − n·u), u = 2⁻²⁴ (Higham, Accuracy and Stability of
//! Numerical Algorithms, §3.1), plus u·|y| for the reference's own rounding. We check each element against that
//! bound, so the test is strict for cancelling sums and never flaky for large ones.

mod common;

use std::sync::Arc;

use webvlm::gpu::{DType, GpuContext, Recorder};
use webvlm::ops::elementwise::{self as ew, Unary};
use webvlm::ops::matmul::{self as mm, Fused, Path, PreNorm};
use webvlm::ops::norm;
use webvlm::testing::Rng;
use webvlm::Error;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn gamma(n: usize) -> f64 {
    n as f64 * U / (1.0 - n as f64 * U)
}

/// The accumulation error bound of the module docs for `y[i, j]` (`want` the reference value).
#[allow(clippy::too_many_arguments)]
fn bound(x: &[f32], k: usize, w: &[f32], bias: Option<&[f32]>, quant: bool, i: usize, j: usize, want: f32) -> f64 {
    let mut mag: f64 = bias.map_or(0.0, |b| b[j].abs() as f64);
    for t in 0..k {
        mag += (x[i * k + t] as f64 * w[j * k + t] as f64).abs();
    }
    if quant {
        // The Q4 GEMV applies the block offset once per block (Σ(q−8)x = Σqx − 8Σx, Σ(qd+m)x = dΣqx + mΣx),
        // so its intermediate sums reach Σ|x|·3·max|w| over the block (|qd| ≤ 2·max|w|, |m|, |8d| ≤ max|w|).
        for blk in 0..k / 32 {
            let r = &w[j * k + blk * 32..j * k + blk * 32 + 32];
            let amax = r.iter().fold(0f64, |a, v| a.max(v.abs() as f64));
            mag += x[i * k + blk * 32..i * k + blk * 32 + 32].iter().map(|v| v.abs() as f64).sum::<f64>() * 3.0 * amax;
        }
    }
    gamma(k + 8) * mag + U * want.abs() as f64 + 1e-30
}

/// Checks `got` against `cpu_linear` with the per-element accumulation bound from the module docs.
#[allow(clippy::too_many_arguments)]
fn check_linear(
    what: &str,
    got: &[f32],
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    quant: bool,
) -> Result<(), String> {
    let want = mm::cpu_linear(x, m, k, w, n, bias);
    if got.len() != want.len() {
        return Err(format!("{what}: {} outputs, expected {}", got.len(), want.len()));
    }
    for i in 0..m {
        for j in 0..n {
            let (gv, wv) = (got[i * n + j], want[i * n + j]);
            let tol = bound(x, k, w, bias, quant, i, j, wv);
            let err = (gv as f64 - wv as f64).abs();
            if !(err <= tol) {
                return Err(format!("{what}: y[{i}, {j}] = {gv}, want {wv} (|err| {err:e} > bound {tol:e})"));
            }
        }
    }
    Ok(())
}

/// An RMSNorm before a product ([`Fused::pre_norm`]): its gain `g` (random, so the norm is not near the
/// identity) and the reference's normalized rows of x, which the product's reference then takes for x.
struct NormCase {
    g: Vec<f32>,
    eps: f32,
    /// `cpu_rms_norm(x)` (f64 inside, rounded once)
    xn: Vec<f32>,
}

impl NormCase {
    fn new(rng: &mut Rng, x: &[f32], k: usize) -> Self {
        let g = rng.vec(k, -2.0, 2.0);
        let eps = 1e-5;
        let xn = norm::cpu_rms_norm(x, &g, eps);
        Self { g, eps, xn }
    }

    /// The GPU norm's error carried into `y[i, j]`: its x² sum over K in f32 (γ_K relative, halved by the
    /// square root), inverseSqrt (2 ulp), the products x·inv·g (2 roundings) and the reference's rounding of xn,
    /// each relative to |xn|: within (γ_K + 8u)·Σ|xn·w|.
    fn slack(&self, k: usize, w: &[f32], i: usize, j: usize) -> f64 {
        let mag: f64 = (0..k).map(|t| (self.xn[i * k + t] as f64 * w[j * k + t] as f64).abs()).sum();
        (gamma(k) + 8.0 * U) * mag
    }
}

/// `linear_swiglu` with the stacked weight `[gate; up]` (`2f` rows) against `silu(g)·u` of the reference
/// products (in f64). The bound: the products' accumulation bounds `eg`, `eu` carried through (|silu'| ≤ 1.1), plus
/// the GPU's `exp` and the two roundings (a few ulps of the result).
async fn run_swiglu(
    ctx: &Arc<GpuContext>,
    rng: &mut Rng,
    dtype: DType,
    (m, k, f): (usize, usize, usize),
    path: Path,
    with_bias: bool,
    with_norm: bool,
) -> Result<(), String> {
    let what = format!("swiglu {dtype} {path:?} M={m} K={k} F={f} bias={with_bias} norm={with_norm}");
    let x = rng.vec(m * k, -3.0, 3.0);
    let nc = with_norm.then(|| NormCase::new(rng, &x, k));
    let w = rng.vec(2 * f * k, -1.0, 1.0);
    let b = rng.vec(2 * f, -1.0, 1.0);
    let bias = with_bias.then_some(&b[..]);
    let w_deq = mm::cpu_roundtrip(&w, dtype).map_err(|e| format!("{what}: {e}"))?;
    let tw = mm::upload_weight(ctx, &w, &[2 * f, k], dtype).map_err(|e| format!("{what}: {e}"))?;
    let tx = ctx.upload_f32(&x, &[m, k]).map_err(|e| e.to_string())?;
    let tb = ctx.upload_f32(&b, &[2 * f]).map_err(|e| e.to_string())?;
    let tg = nc.as_ref().map(|c| ctx.upload_f32(&c.g, &[k])).transpose().map_err(|e| e.to_string())?;
    let pre_norm = nc.as_ref().zip(tg.as_ref()).map(|(c, g)| PreNorm { w: g, eps: c.eps });
    let mut rec = Recorder::new(ctx);
    let y = mm::linear_swiglu_with(&mut rec, &tx, &tw, with_bias.then_some(&tb), pre_norm, path)
        .map_err(|e| format!("{what}: {e}"))?;
    // the product's reference takes the normalized x
    let x = nc.as_ref().map_or(x.clone(), |c| c.xn.clone());
    let slack = |i, j| nc.as_ref().map_or(0.0, |c| c.slack(k, &w_deq, i, j));
    rec.submit().map_err(|e| format!("{what}: {e}"))?;
    if y.shape != [m, f] {
        return Err(format!("{what}: output shape {:?}", y.shape));
    }
    let got = ctx.read_f32(&y).await.map_err(|e| e.to_string())?;
    let full = mm::cpu_linear(&x, m, k, &w_deq, 2 * f, bias);
    for i in 0..m {
        for j in 0..f {
            let (g, u) = (full[i * 2 * f + j] as f64, full[i * 2 * f + f + j] as f64);
            let silu = g / (1.0 + (-g).exp());
            let want = silu * u;
            let eg = bound(&x, k, &w_deq, bias, dtype.is_quantized(), i, j, g as f32) + slack(i, j);
            let eu = bound(&x, k, &w_deq, bias, dtype.is_quantized(), i, f + j, u as f32) + slack(i, f + j);
            let tol = 1.1 * eg * u.abs() + silu.abs() * eu + 8.0 * U * (want.abs() + g.abs() * u.abs()) + 1e-30;
            let gv = got[i * f + j] as f64;
            if !((gv - want).abs() <= tol) {
                return Err(format!(
                    "{what}: y[{i}, {j}] = {gv}, want {want} (|err| {:e} > {tol:e})",
                    (gv - want).abs()
                ));
            }
        }
    }
    Ok(())
}

/// The SwiGLU products for every dtype: the fused GEMV (1–4 rows, and 9 rows in passes), subgroups where the
/// adapter has them, and the GEMM paths followed by `swiglu_halves`; each with and without an RMSNorm before it
/// (fused into the GEMV of one row where the adapter has subgroups, a kernel of its own otherwise).
async fn linear_swiglu() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(13);
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1] {
        for (i, &f) in [1usize, 7, 65].iter().enumerate() {
            for (j, &k) in [32usize, 96].iter().enumerate() {
                let m = [1, 2, 3, 4][(i + j) % 4];
                run_swiglu(&ctx, &mut rng, dtype, (m, k, f), Path::Gemv, (i + j) % 2 == 0, i % 2 == 0).await?;
                run_swiglu(&ctx, &mut rng, dtype, (1, k, f), Path::Auto, (i + j) % 2 == 1, i % 2 == 1).await?;
                if ctx.caps.subgroups {
                    run_swiglu(&ctx, &mut rng, dtype, (m, k, f), Path::GemvSubgroups, (i + j) % 2 == 1, i != 1).await?;
                    run_swiglu(&ctx, &mut rng, dtype, (1, k, f), Path::GemvWords, (i + j) % 2 == 0, i != 0).await?;
                }
                if direct_subgroups(&ctx) {
                    run_swiglu(&ctx, &mut rng, dtype, (1, k, f), Path::GemvSharedX, (i + j) % 2 == 0, i != 2).await?;
                }
                run_swiglu(&ctx, &mut rng, dtype, (17, k, f), Path::Gemm, j % 2 == 0, j == 0).await?;
                run_swiglu(&ctx, &mut rng, dtype, (17, k, f), Path::Direct, j % 2 == 1, j == 1).await?;
            }
        }
        run_swiglu(&ctx, &mut rng, dtype, (9, 64, 33), Path::Gemv, true, true).await?;
        run_swiglu(&ctx, &mut rng, dtype, (9, 64, 33), Path::Auto, false, false).await?;
    }
    // an odd number of stacked rows is not [gate; up]
    let tw = mm::upload_weight(&ctx, &[0.0; 3 * 32], &[3, 32], DType::F32).map_err(|e| e.to_string())?;
    let tx = ctx.upload_f32(&[0.0; 32], &[1, 32]).map_err(|e| e.to_string())?;
    match mm::linear_swiglu(&mut Recorder::new(&ctx), &tx, &tw, None) {
        Err(Error::Shape { .. }) => Ok(()),
        other => Err(format!("odd stacked rows: expected a shape error, got {other:?}")),
    }
}

async fn run_linear(
    ctx: &Arc<GpuContext>,
    rng: &mut Rng,
    dtype: DType,
    (m, k, n): (usize, usize, usize),
    path: Path,
    with_bias: bool,
) -> Result<(), String> {
    let what = format!("{dtype} {path:?} M={m} K={k} N={n} bias={with_bias}");
    let x = rng.vec(m * k, -1.0, 1.0);
    let w = rng.vec(n * k, -1.0, 1.0);
    let b = rng.vec(n, -1.0, 1.0);
    // The weights as the kernels see them (quantized/rounded by the loader's ggml-exact code).
    let w_deq = mm::cpu_roundtrip(&w, dtype).map_err(|e| format!("{what}: {e}"))?;
    let tw = mm::upload_weight(ctx, &w, &[n, k], dtype).map_err(|e| format!("{what}: {e}"))?;
    let tx = ctx.upload_f32(&x, &[m, k]).map_err(|e| e.to_string())?;
    let tb = ctx.upload_f32(&b, &[n]).map_err(|e| e.to_string())?;
    let mut rec = Recorder::new(ctx);
    let y = mm::linear_with(&mut rec, &tx, &tw, with_bias.then_some(&tb), path).map_err(|e| format!("{what}: {e}"))?;
    rec.submit().map_err(|e| format!("{what}: {e}"))?;
    if y.shape != [m, n] {
        return Err(format!("{what}: output shape {:?}", y.shape));
    }
    let got = ctx.read_f32(&y).await.map_err(|e| e.to_string())?;
    check_linear(&what, &got, &x, m, k, &w_deq, n, with_bias.then_some(&b[..]), dtype.is_quantized())
}

/// `act(norm(x)·wᵀ + b) + r` ([`Fused`]): the activation in the direct and tiled GEMMs' stores and after the
/// GEMV, the residual in every kernel's stores, the norm in the GEMV of one row (where the adapter has subgroups)
/// or before the product. Against the f64 reference carried through the activation: the product's bound (and
/// the norm's slack) times the activation's largest slope (GELU 1.13, SiLU 1.1), the activation's own error as
/// in tests/kernels_elementwise.rs (2e-6 absolute and relative) and the add's rounding.
#[allow(clippy::too_many_arguments)]
async fn run_fused(
    ctx: &Arc<GpuContext>,
    rng: &mut Rng,
    dtype: DType,
    (m, k, n): (usize, usize, usize),
    path: Path,
    act: Option<Unary>,
    (with_residual, with_norm): (bool, bool),
) -> Result<(), String> {
    let what = format!("fused {act:?} residual={with_residual} norm={with_norm} {dtype} {path:?} M={m} K={k} N={n}");
    let x = rng.vec(m * k, -1.0, 1.0);
    let nc = with_norm.then(|| NormCase::new(rng, &x, k));
    let w = rng.vec(n * k, -1.0, 1.0);
    let b = rng.vec(n, -1.0, 1.0);
    let r = rng.vec(m * n, -4.0, 4.0);
    let w_deq = mm::cpu_roundtrip(&w, dtype).map_err(|e| format!("{what}: {e}"))?;
    let tw = mm::upload_weight(ctx, &w, &[n, k], dtype).map_err(|e| format!("{what}: {e}"))?;
    let tx = ctx.upload_f32(&x, &[m, k]).map_err(|e| e.to_string())?;
    let tb = ctx.upload_f32(&b, &[n]).map_err(|e| e.to_string())?;
    let tr = ctx.upload_f32(&r, &[m, n]).map_err(|e| e.to_string())?;
    let tg = nc.as_ref().map(|c| ctx.upload_f32(&c.g, &[k])).transpose().map_err(|e| e.to_string())?;
    let pre_norm = nc.as_ref().zip(tg.as_ref()).map(|(c, g)| PreNorm { w: g, eps: c.eps });
    let fused = Fused { pre_norm, act, residual: with_residual.then_some(&tr) };
    let mut rec = Recorder::new(ctx);
    let y = mm::linear_fused(&mut rec, &tx, &tw, Some(&tb), fused, path).map_err(|e| format!("{what}: {e}"))?;
    let x = nc.as_ref().map_or(x.clone(), |c| c.xn.clone());
    rec.submit().map_err(|e| format!("{what}: {e}"))?;
    if y.shape != [m, n] {
        return Err(format!("{what}: output shape {:?}", y.shape));
    }
    let got = ctx.read_f32(&y).await.map_err(|e| e.to_string())?;
    let lin = mm::cpu_linear(&x, m, k, &w_deq, n, Some(&b));
    let activated = match act {
        Some(op) => ew::cpu_unary(op, &lin),
        None => lin.clone(),
    };
    for i in 0..m {
        for j in 0..n {
            let e = i * n + j;
            let res = if with_residual { r[e] as f64 } else { 0.0 };
            let want = activated[e] as f64 + res;
            let eb = bound(&x, k, &w_deq, Some(&b), dtype.is_quantized(), i, j, lin[e])
                + nc.as_ref().map_or(0.0, |c| c.slack(k, &w_deq, i, j));
            let tol = 1.13 * eb + 2e-6 * (1.0 + (activated[e] as f64).abs()) + U * want.abs() + 1e-30;
            let gv = got[e] as f64;
            if !((gv - want).abs() <= tol) {
                return Err(format!(
                    "{what}: y[{i}, {j}] = {gv}, want {want} (|err| {:e} > {tol:e})",
                    (gv - want).abs()
                ));
            }
        }
    }
    Ok(())
}

/// Every fusion on every path that runs here (the GEMV's separate kernels included), float and quantized
/// weights, ragged M and N, one row of x (where the GEMV fuses the norm) and several; a residual of the wrong
/// shape and a norm weight of the wrong length are typed errors.
async fn linear_fused() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(21);
    let mut paths = vec![Path::Auto, Path::Gemv, Path::Gemm, Path::Direct];
    if ctx.caps.subgroups {
        paths.extend([Path::GemvSubgroups, Path::GemvWords]);
    }
    if direct_subgroups(&ctx) {
        paths.extend([Path::DirectSubgroups, Path::GemvSharedX]);
    }
    let gemv =
        |p: Path| matches!(p, Path::Auto | Path::Gemv | Path::GemvSubgroups | Path::GemvWords | Path::GemvSharedX);
    let acts = [None, Some(Unary::GeluTanh), Some(Unary::GeluErf), Some(Unary::Silu)];
    for (i, dtype) in [DType::F32, DType::F16, DType::Q4_1, DType::BF16].into_iter().enumerate() {
        for (j, &path) in paths.iter().enumerate() {
            for (a, &act) in acts.iter().enumerate() {
                let m = if gemv(path) { [1, 1, 3, 4][(i + a) % 4] } else { [17, 64, 9][(i + a) % 3] };
                let n = [7, 64, 33][(j + a) % 3];
                let k = if dtype == DType::Q4_1 { 64 } else { [32, 40][a % 2] };
                let (r, q) = ((i + j + a) % 2 == 0, (i + a) % 2 == 0);
                run_fused(&ctx, &mut rng, dtype, (m, k, n), path, act, (r, q)).await?;
                run_fused(&ctx, &mut rng, dtype, (m, k, n), path, act, (!r, !q)).await?;
            }
        }
    }
    let tw = mm::upload_weight(&ctx, &[0.0; 8 * 32], &[8, 32], DType::F32).map_err(|e| e.to_string())?;
    let tx = ctx.upload_f32(&[0.0; 17 * 32], &[17, 32]).map_err(|e| e.to_string())?;
    let tr = ctx.upload_f32(&[0.0; 17 * 7], &[17, 7]).map_err(|e| e.to_string())?;
    let fused = Fused { residual: Some(&tr), ..Fused::default() };
    match mm::linear_fused(&mut Recorder::new(&ctx), &tx, &tw, None, fused, Path::Auto) {
        Err(Error::Shape { .. }) => {}
        other => return Err(format!("a [17, 7] residual for a [17, 8] output: expected a shape error, got {other:?}")),
    }
    let tg = ctx.upload_f32(&[1.0; 31], &[31]).map_err(|e| e.to_string())?;
    let tx1 = ctx.upload_f32(&[0.0; 32], &[1, 32]).map_err(|e| e.to_string())?;
    let fused = Fused { pre_norm: Some(PreNorm { w: &tg, eps: 1e-5 }), ..Fused::default() };
    match mm::linear_fused(&mut Recorder::new(&ctx), &tx1, &tw, None, fused, Path::Auto) {
        Err(Error::Shape { .. }) => Ok(()),
        other => Err(format!("a norm weight of 31 for K = 32: expected a shape error, got {other:?}")),
    }
}

/// The q/k/v GEMV with the rotary embedding and the cache write in its store (`linear_rope_qkv`) against the CPU
/// reference (`cpu_linear`, then `cpu_rope` on q and k; v as it is): q, the cache rows at `pos`, and every other
/// cache row untouched; both pair layouts, every weight dtype, every GEMV variant the adapter has, with and
/// without the input RMSNorm before it. Tolerance: the accumulation bounds of both rows of a rotated pair (|cos|,
/// |sin| ≤ 1; with the norm's slack) plus a few ulps for the rotation.
async fn linear_rope_qkv() -> Result<(), String> {
    use webvlm::ops::rope::{self, RopeLayout};
    let ctx = common::ctx().await;
    let mut rng = Rng::new(23);
    let mut paths = vec![Path::Auto, Path::Gemv];
    if ctx.caps.subgroups {
        paths.extend([Path::GemvSubgroups, Path::GemvWords]);
    }
    if direct_subgroups(&ctx) {
        paths.push(Path::GemvSharedX);
    }
    let dtypes = [DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1];
    // (heads, kv heads, head dim, K, position)
    let shapes = [(9usize, 3usize, 64usize, 576usize, 37usize), (2, 1, 8, 64, 0), (4, 4, 16, 96, 5), (3, 1, 4, 32, 2)];
    let mut case = 0;
    for &(h, hkv, d, k, pos) in &shapes {
        let tmax = pos + 3;
        let inv = rope::inv_freq(10000.0, d);
        let table = rope::cos_sin_table(&ctx, &inv, tmax).map_err(|e| e.to_string())?;
        let n = (h + 2 * hkv) * d;
        for dtype in dtypes {
            for layout in [RopeLayout::RotateHalf, RopeLayout::Interleaved] {
                for &path in &paths {
                    case += 1;
                    let (with_bias, with_norm) = (case % 2 == 0, case % 3 != 0);
                    let what = format!(
                        "rope_qkv {dtype} {layout:?} {path:?} H={h} Hkv={hkv} D={d} K={k} pos={pos} norm={with_norm}"
                    );
                    let x = rng.vec(k, -1.0, 1.0);
                    let nc = with_norm.then(|| NormCase::new(&mut rng, &x, k));
                    let w = rng.vec(n * k, -1.0, 1.0);
                    let b = rng.vec(n, -1.0, 1.0);
                    let bias = with_bias.then_some(&b[..]);
                    let w_deq = mm::cpu_roundtrip(&w, dtype).map_err(|e| format!("{what}: {e}"))?;
                    let tw = mm::upload_weight(&ctx, &w, &[n, k], dtype).map_err(|e| format!("{what}: {e}"))?;
                    let tx = ctx.upload_f32(&x, &[1, k]).map_err(|e| e.to_string())?;
                    let tb = ctx.upload_f32(&b, &[n]).map_err(|e| e.to_string())?;
                    let (k0, v0) = (rng.vec(tmax * hkv * d, -9.0, 9.0), rng.vec(tmax * hkv * d, -9.0, 9.0));
                    let kc = ctx.upload_f32(&k0, &[tmax, hkv, d]).map_err(|e| e.to_string())?;
                    let vc = ctx.upload_f32(&v0, &[tmax, hkv, d]).map_err(|e| e.to_string())?;
                    let r = mm::RopeQkv { table: &table, pos, layout, heads: h, k_cache: &kc, v_cache: &vc };
                    let tg = nc.as_ref().map(|c| ctx.upload_f32(&c.g, &[k])).transpose().map_err(|e| e.to_string())?;
                    let pre_norm = nc.as_ref().zip(tg.as_ref()).map(|(c, g)| PreNorm { w: g, eps: c.eps });
                    let mut rec = Recorder::new(&ctx);
                    let q = mm::linear_rope_qkv(&mut rec, &tx, &tw, with_bias.then_some(&tb), &r, pre_norm, path)
                        .map_err(|e| format!("{what}: {e}"))?;
                    let x = nc.as_ref().map_or(x.clone(), |c| c.xn.clone());
                    rec.submit().map_err(|e| format!("{what}: {e}"))?;
                    if q.shape != [1, h, d] {
                        return Err(format!("{what}: q shape {:?}", q.shape));
                    }
                    // the reference: the projection, then the rotation of its q and k heads
                    let y = mm::cpu_linear(&x, 1, k, &w_deq, n, bias);
                    let mut want = y.clone();
                    want[..h * d].copy_from_slice(&rope::cpu_rope(&y[..h * d], 1, h, d, &inv, pos, layout));
                    let kr = rope::cpu_rope(&y[h * d..(h + hkv) * d], 1, hkv, d, &inv, pos, layout);
                    want[h * d..(h + hkv) * d].copy_from_slice(&kr);
                    let mut got = ctx.read_f32(&q).await.map_err(|e| e.to_string())?;
                    let (kg, vg) = (
                        ctx.read_f32(&kc).await.map_err(|e| e.to_string())?,
                        ctx.read_f32(&vc).await.map_err(|e| e.to_string())?,
                    );
                    let row = pos * hkv * d..(pos + 1) * hkv * d;
                    got.extend_from_slice(&kg[row.clone()]);
                    got.extend_from_slice(&vg[row.clone()]);
                    for j in 0..n {
                        // j's partner in its rotated pair (v rows: itself)
                        let jd = j % d;
                        let pj = match layout {
                            _ if j >= (h + hkv) * d => j,
                            RopeLayout::Interleaved => j ^ 1,
                            RopeLayout::RotateHalf => {
                                if jd < d / 2 {
                                    j + d / 2
                                } else {
                                    j - d / 2
                                }
                            }
                        };
                        let quant = dtype.is_quantized();
                        let slack = |j| nc.as_ref().map_or(0.0, |c| c.slack(k, &w_deq, 0, j));
                        let e = bound(&x, k, &w_deq, bias, quant, 0, j, y[j])
                            + bound(&x, k, &w_deq, bias, quant, 0, pj, y[pj])
                            + slack(j)
                            + slack(pj);
                        let tol = e + 4e-6 * (y[j].abs() + y[pj].abs()) as f64 + 1e-30;
                        let err = (got[j] as f64 - want[j] as f64).abs();
                        if !(err <= tol) {
                            return Err(format!(
                                "{what}: output row {j} = {}, want {} (|err| {err:e} > {tol:e})",
                                got[j], want[j]
                            ));
                        }
                    }
                    // every other cache row as it was
                    for (name, g, w0) in [("k", &kg, &k0), ("v", &vg, &v0)] {
                        if g[..row.start] != w0[..row.start] || g[row.end..] != w0[row.end..] {
                            return Err(format!("{what}: {name} cache rows other than {pos} changed"));
                        }
                    }
                }
            }
        }
    }
    // typed errors: two rows of x, a GEMM path, a head dim not a multiple of 4, a position past the cache
    let table = rope::cos_sin_table(&ctx, &rope::inv_freq(10000.0, 8), 16).map_err(|e| e.to_string())?;
    let kc = ctx.upload_f32(&[0.0; 4 * 8], &[4, 1, 8]).map_err(|e| e.to_string())?;
    let vc = ctx.upload_f32(&[0.0; 4 * 8], &[4, 1, 8]).map_err(|e| e.to_string())?;
    let tw = mm::upload_weight(&ctx, &[0.0; 24 * 32], &[24, 32], DType::F32).map_err(|e| e.to_string())?;
    let x1 = ctx.upload_f32(&[0.0; 32], &[1, 32]).map_err(|e| e.to_string())?;
    let x2 = ctx.upload_f32(&[0.0; 64], &[2, 32]).map_err(|e| e.to_string())?;
    let r =
        |pos| mm::RopeQkv { table: &table, pos, layout: RopeLayout::Interleaved, heads: 1, k_cache: &kc, v_cache: &vc };
    let mut rec = Recorder::new(&ctx);
    match mm::linear_rope_qkv(&mut rec, &x2, &tw, None, &r(0), None, Path::Auto) {
        Err(Error::Shape { .. }) => {}
        other => return Err(format!("two rows of x: expected a shape error, got {other:?}")),
    }
    match mm::linear_rope_qkv(&mut rec, &x1, &tw, None, &r(0), None, Path::Direct) {
        Err(Error::Shape { .. }) => {}
        other => return Err(format!("a GEMM path: expected a shape error, got {other:?}")),
    }
    match mm::linear_rope_qkv(&mut rec, &x1, &tw, None, &r(4), None, Path::Auto) {
        Err(Error::ContextOverflow { .. }) => {}
        other => return Err(format!("past the cache: expected ContextOverflow, got {other:?}")),
    }
    let table2 = rope::cos_sin_table(&ctx, &rope::inv_freq(10000.0, 2), 16).map_err(|e| e.to_string())?;
    let kc2 = ctx.upload_f32(&[0.0; 4 * 2], &[4, 1, 2]).map_err(|e| e.to_string())?;
    let tw2 = mm::upload_weight(&ctx, &[0.0; 6 * 32], &[6, 32], DType::F32).map_err(|e| e.to_string())?;
    let r2 =
        mm::RopeQkv { table: &table2, pos: 0, layout: RopeLayout::Interleaved, heads: 1, k_cache: &kc2, v_cache: &kc2 };
    match mm::linear_rope_qkv(&mut rec, &x1, &tw2, None, &r2, None, Path::Auto) {
        Err(Error::Shape { .. }) => Ok(()),
        other => Err(format!("head dim 2: expected a shape error, got {other:?}")),
    }
}

const MS: &[usize] = &[1, 2, 3, 17, 64, 129];
const NS: &[usize] = &[1, 7, 65, 257];

/// f32 / f16 / bf16 weights: GEMV (M ≤ 4, K a multiple of 8 for the vec4 loads) and GEMM (any M, K, N, odd
/// included).
async fn float_weights(ctx: Arc<GpuContext>) -> Result<(), String> {
    let mut rng = Rng::new(11);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (i, &n) in NS.iter().enumerate() {
            for (j, &k) in [8usize, 96, 200].iter().enumerate() {
                let m = [1, 2, 3, 4][(i + j) % 4];
                run_linear(&ctx, &mut rng, dtype, (m, k, n), Path::Gemv, (i + j) % 2 == 0).await?;
                if ctx.caps.subgroups {
                    run_linear(&ctx, &mut rng, dtype, (m, k, n), Path::GemvSubgroups, (i + j) % 2 == 1).await?;
                }
                // x chunks shared by subgroup broadcasts (one x row; K % 32 != 0 takes the plain variant)
                if direct_subgroups(&ctx) {
                    run_linear(&ctx, &mut rng, dtype, (1, k, n), Path::GemvSharedX, (i + j) % 2 == 0).await?;
                }
            }
            for (j, &m) in MS.iter().enumerate() {
                let k = [1usize, 37, 75, 96, 33, 130][(i + j) % 6];
                run_linear(&ctx, &mut rng, dtype, (m, k, n), Path::Gemm, j % 2 == 1).await?;
                // the barrier-free GEMM of CPU adapters: M not a multiple of its 8 rows, N not of its 4 columns
                let k = [8usize, 96, 200][(i + j) % 3];
                run_linear(&ctx, &mut rng, dtype, (m, k, n), Path::Direct, j % 2 == 0).await?;
                if direct_subgroups(&ctx) {
                    run_linear(&ctx, &mut rng, dtype, (m, k, n), Path::DirectSubgroups, j % 2 == 1).await?;
                }
            }
        }
        // N a multiple of 4: the direct GEMM's vec4 stores
        run_linear(&ctx, &mut rng, dtype, (17, 96, 64), Path::Direct, true).await?;
        if direct_subgroups(&ctx) {
            run_linear(&ctx, &mut rng, dtype, (17, 96, 64), Path::DirectSubgroups, false).await?;
        }
        // Auto with a ragged K falls back to the GEMM even for M = 1.
        run_linear(&ctx, &mut rng, dtype, (1, 37, 9), Path::Auto, true).await?;
        // More rows than one GEMV pass handles: chunks of 4 rows.
        run_linear(&ctx, &mut rng, dtype, (9, 64, 33), Path::Gemv, true).await?;
    }
    Ok(())
}

/// Q8_0 / Q4_0 / Q4_1 weights, dequantized in the kernels.
async fn quant_weights(ctx: Arc<GpuContext>) -> Result<(), String> {
    let mut rng = Rng::new(12);
    for dtype in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
        for (i, &n) in NS.iter().enumerate() {
            for (j, &k) in [32usize, 96, 576].iter().enumerate() {
                let m = [1, 2, 3, 4][(i + j) % 4];
                run_linear(&ctx, &mut rng, dtype, (m, k, n), Path::Gemv, (i + j) % 2 == 0).await?;
                if ctx.caps.subgroups {
                    run_linear(&ctx, &mut rng, dtype, (m, k, n), Path::GemvSubgroups, (i + j) % 2 == 1).await?;
                    // lanes over words: one x row (more rows take the lane-per-block kernel)
                    run_linear(&ctx, &mut rng, dtype, (1, k, n), Path::GemvWords, (i + j) % 2 == 0).await?;
                }
                // x chunks shared by subgroup broadcasts (one x row; K % 32 != 0 takes the plain variant)
                if direct_subgroups(&ctx) {
                    run_linear(&ctx, &mut rng, dtype, (1, k, n), Path::GemvSharedX, (i + j) % 2 == 0).await?;
                }
            }
            for (j, &m) in MS.iter().enumerate() {
                let k = [32usize, 96, 576][(i + j) % 3];
                run_linear(&ctx, &mut rng, dtype, (m, k, n), Path::Gemm, j % 2 == 1).await?;
                run_linear(&ctx, &mut rng, dtype, (m, k, n), Path::Direct, j % 2 == 0).await?;
                if direct_subgroups(&ctx) {
                    run_linear(&ctx, &mut rng, dtype, (m, k, n), Path::DirectSubgroups, j % 2 == 1).await?;
                }
            }
        }
        run_linear(&ctx, &mut rng, dtype, (9, 64, 33), Path::Auto, true).await?;
        run_linear(&ctx, &mut rng, dtype, (17, 96, 64), Path::Direct, false).await?;
        if direct_subgroups(&ctx) {
            run_linear(&ctx, &mut rng, dtype, (17, 96, 64), Path::DirectSubgroups, true).await?;
        }
    }
    Ok(())
}

async fn linear_float() -> Result<(), String> {
    float_weights(common::ctx().await).await
}

async fn linear_quant() -> Result<(), String> {
    quant_weights(common::ctx().await).await
}

/// Whether the adapter has the direct GEMM's subgroup variant (one subgroup size, 4 or 8).
fn direct_subgroups(ctx: &GpuContext) -> bool {
    matches!(ctx.caps.subgroup_size, Some(4 | 8))
}

/// The fallback kernels (no shader-f16, no subgroups) on the same shapes; the forced subgroup variants of the
/// direct GEMM and the GEMV are refused there.
async fn linear_plain_context() -> Result<(), String> {
    let ctx = common::ctx_plain().await;
    let tw = mm::upload_weight(&ctx, &[0.0; 4 * 32], &[4, 32], DType::F32).map_err(|e| e.to_string())?;
    let tx = ctx.upload_f32(&[0.0; 32], &[1, 32]).map_err(|e| e.to_string())?;
    match mm::linear_with(&mut Recorder::new(&ctx), &tx, &tw, None, Path::DirectSubgroups) {
        Err(Error::MissingFeature { .. }) => {}
        other => return Err(format!("DirectSubgroups without subgroups: expected MissingFeature, got {other:?}")),
    }
    match mm::linear_with(&mut Recorder::new(&ctx), &tx, &tw, None, Path::GemvSharedX) {
        Err(Error::MissingFeature { .. }) => {}
        other => return Err(format!("GemvSharedX without subgroups: expected MissingFeature, got {other:?}")),
    }
    float_weights(ctx.clone()).await?;
    quant_weights(ctx).await
}

/// Leading dims of x are flattened into M, and the output keeps them.
async fn linear_keeps_leading_dims() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(13);
    let (k, n) = (64, 24);
    let x = rng.vec(2 * 3 * k, -1.0, 1.0);
    let w = rng.vec(n * k, -1.0, 1.0);
    let tx = ctx.upload_f32(&x, &[2, 3, k]).map_err(|e| e.to_string())?;
    let tw = mm::upload_weight(&ctx, &w, &[n, k], DType::Q8_0).map_err(|e| e.to_string())?;
    let mut rec = Recorder::new(&ctx);
    let y = mm::linear(&mut rec, &tx, &tw, None).map_err(|e| e.to_string())?;
    rec.submit().map_err(|e| e.to_string())?;
    if y.shape != [2, 3, n] {
        return Err(format!("shape {:?}", y.shape));
    }
    let got = ctx.read_f32(&y).await.map_err(|e| e.to_string())?;
    let w_deq = mm::cpu_roundtrip(&w, DType::Q8_0).map_err(|e| e.to_string())?;
    check_linear("leading dims", &got, &x, 6, k, &w_deq, n, None, true)
}

/// General f32 matmul: plain, transposed, batched, batched with a shared B; odd sizes.
async fn matmul_general() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(14);
    for &(batch, m, k, n) in &[(0usize, 1usize, 1usize, 1usize), (0, 70, 33, 65), (3, 17, 40, 9), (2, 65, 7, 130)] {
        for trans in [false, true] {
            for shared_b in [false, true] {
                if batch == 0 && shared_b {
                    continue;
                }
                let nb = batch.max(1);
                let what = format!("matmul batch={batch} M={m} K={k} N={n} trans={trans} shared_b={shared_b}");
                let a = rng.vec(nb * m * k, -1.0, 1.0);
                let bcount = if shared_b { 1 } else { nb };
                let b = rng.vec(bcount * k * n, -1.0, 1.0);
                let a_shape = if batch == 0 { vec![m, k] } else { vec![batch, m, k] };
                let inner = if trans { vec![n, k] } else { vec![k, n] };
                let b_shape = if batch == 0 || shared_b { inner } else { [vec![batch], inner].concat() };
                let ta = ctx.upload_f32(&a, &a_shape).map_err(|e| e.to_string())?;
                let tb = ctx.upload_f32(&b, &b_shape).map_err(|e| e.to_string())?;
                let mut rec = Recorder::new(&ctx);
                let c = mm::matmul(&mut rec, &ta, &tb, trans).map_err(|e| format!("{what}: {e}"))?;
                rec.submit().map_err(|e| e.to_string())?;
                let got = ctx.read_f32(&c).await.map_err(|e| e.to_string())?;
                for bi in 0..nb {
                    // as [N, K] for the reference
                    let bsl = &b[(if shared_b { 0 } else { bi }) * k * n..][..k * n];
                    let wt: Vec<f32> =
                        if trans { bsl.to_vec() } else { (0..n * k).map(|i| bsl[(i % k) * n + i / k]).collect() };
                    check_linear(
                        &format!("{what} batch {bi}"),
                        &got[bi * m * n..(bi + 1) * m * n],
                        &a[bi * m * k..(bi + 1) * m * k],
                        m,
                        k,
                        &wt,
                        n,
                        None,
                        false,
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// The GPU dequantization of the `gguf` package's bytes equals its own dequantization, bit for bit: an identity
/// x picks out each weight element exactly (1·w plus exact zeros), through the GEMV and the GEMM.
async fn dequant_matches_gguf_fixtures() -> Result<(), String> {
    let ctx = common::ctx().await;
    let (rows, cols) = (6usize, 96usize);
    let fixtures: [(DType, &[u8], &[u8]); 3] = [
        (DType::Q8_0, include_bytes!("fixtures/quant/q8_0.bin"), include_bytes!("fixtures/quant/q8_0_deq.bin")),
        (DType::Q4_0, include_bytes!("fixtures/quant/q4_0.bin"), include_bytes!("fixtures/quant/q4_0_deq.bin")),
        (DType::Q4_1, include_bytes!("fixtures/quant/q4_1.bin"), include_bytes!("fixtures/quant/q4_1_deq.bin")),
    ];
    let mut eye = vec![0f32; cols * cols];
    for i in 0..cols {
        eye[i * cols + i] = 1.0;
    }
    let tx = ctx.upload_f32(&eye, &[cols, cols]).map_err(|e| e.to_string())?;
    for (dtype, bytes, deq) in fixtures {
        let want: Vec<f32> = bytemuck::pod_collect_to_vec(deq);
        let tw = mm::upload_ggml(&ctx, bytes, &[rows, cols], dtype).map_err(|e| format!("{dtype}: {e}"))?;
        let mut paths = vec![Path::Gemv, Path::Gemm, Path::Direct];
        if ctx.caps.subgroups {
            paths.extend([Path::GemvSubgroups, Path::GemvWords]);
        }
        if direct_subgroups(&ctx) {
            paths.push(Path::DirectSubgroups);
        }
        for &path in &paths {
            let mut rec = Recorder::new(&ctx);
            let y = mm::linear_with(&mut rec, &tx, &tw, None, path).map_err(|e| format!("{dtype}: {e}"))?;
            rec.submit().map_err(|e| e.to_string())?;
            let got = ctx.read_f32(&y).await.map_err(|e| e.to_string())?; // [cols, rows] = wᵀ
            for r in 0..rows {
                for c in 0..cols {
                    let (g, w) = (got[c * rows + r], want[r * cols + c]);
                    if g != w {
                        return Err(format!(
                            "{dtype} {path:?}: w[{r}, {c}] dequantized to {g} on the GPU, gguf says {w}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A safetensors file of `(name, dtype, shape, bytes)`.
fn safetensors(tensors: &[(&str, &str, [usize; 2], Vec<u8>)]) -> Vec<u8> {
    let (mut header, mut data) = (serde_json::Map::new(), Vec::new());
    for (name, dtype, shape, bytes) in tensors {
        let span = [data.len(), data.len() + bytes.len()];
        header.insert(name.to_string(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": span}));
        data.extend_from_slice(bytes);
    }
    let h = serde_json::to_vec(&header).unwrap();
    [(h.len() as u64).to_le_bytes().as_slice(), &h, &data].concat()
}

/// `VarBuilder::matrix_stack` (q/k/v, gate/up as one weight): the same products as the parts loaded apart, in the
/// file's dtype and quantized at load; `None` (load apart) when the parts end up in different dtypes.
async fn stacked_weights_equal_their_parts() -> Result<(), String> {
    use webvlm::loader::safetensors::ShardedSafetensors;
    use webvlm::nn::{LoadOptions, VarBuilder};
    let ctx = common::ctx().await;
    let mut rng = Rng::new(14);
    let k = 64;
    let (a, b) = (rng.vec(3 * k, -1.0, 1.0), rng.vec(5 * k, -1.0, 1.0));
    let c: Vec<u8> = rng.vec(2 * k, -1.0, 1.0).iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
    let file = safetensors(&[
        ("a", "F32", [3, k], bytemuck::cast_slice(&a).to_vec()),
        ("b", "F32", [5, k], bytemuck::cast_slice(&b).to_vec()),
        ("c", "F16", [2, k], c),
    ]);
    let st = ShardedSafetensors::single("t.safetensors", Box::new(file)).map_err(|e| e.to_string())?;
    let x = ctx.upload_f32(&rng.vec(2 * k, -1.0, 1.0), &[2, k]).map_err(|e| e.to_string())?;
    for dtype in [None, Some(DType::Q8_0), Some(DType::Q4_1)] {
        let vb = VarBuilder::new(&st, &ctx, LoadOptions { dtype, ..Default::default() });
        let what = format!("stack as {dtype:?}");
        let stacked = vb.matrix_stack(&["a", "b"], k, &[3, 5]).map_err(|e| format!("{what}: {e}"))?;
        let stacked = stacked.ok_or(format!("{what}: two f32 matrices were not stacked"))?;
        let (ta, tb) =
            (vb.matrix("a", [3, k]).map_err(|e| e.to_string())?, vb.matrix("b", [5, k]).map_err(|e| e.to_string())?);
        if stacked.shape != [8, k] || stacked.dtype != ta.dtype {
            return Err(format!("{what}: {stacked:?}, parts {ta:?}"));
        }
        let mut rec = Recorder::new(&ctx);
        let (ys, ya, yb) = (
            mm::linear(&mut rec, &x, &stacked, None).map_err(|e| e.to_string())?,
            mm::linear(&mut rec, &x, &ta, None).map_err(|e| e.to_string())?,
            mm::linear(&mut rec, &x, &tb, None).map_err(|e| e.to_string())?,
        );
        rec.submit().map_err(|e| e.to_string())?;
        let (ys, ya, yb) = (
            ctx.read_f32(&ys).await.map_err(|e| e.to_string())?,
            ctx.read_f32(&ya).await.map_err(|e| e.to_string())?,
            ctx.read_f32(&yb).await.map_err(|e| e.to_string())?,
        );
        for r in 0..2 {
            // row r of x: [x·aᵀ | x·bᵀ], bit for bit (each output row is the same computation)
            let want: Vec<f32> = ya[r * 3..r * 3 + 3].iter().chain(&yb[r * 5..r * 5 + 5]).copied().collect();
            if ys[r * 8..r * 8 + 8] != want[..] {
                return Err(format!("{what}: row {r}: stacked {:?} vs parts {want:?}", &ys[r * 8..r * 8 + 8]));
            }
        }
    }
    let vb = VarBuilder::new(&st, &ctx, LoadOptions::default());
    match vb.matrix_stack(&["a", "c"], k, &[3, 2]) {
        Ok(None) => {}
        other => return Err(format!("f32 + f16: expected None (load apart), got {other:?}")),
    }
    // quantized at load, f32 and f16 parts both become Q8_0: stacked
    let vb = VarBuilder::new(&st, &ctx, LoadOptions { dtype: Some(DType::Q8_0), ..Default::default() });
    if !matches!(vb.matrix_stack(&["a", "c"], k, &[3, 2]), Ok(Some(_))) {
        return Err("f32 + f16 quantized at load to Q8_0: not stacked".into());
    }
    match vb.matrix_stack(&["a", "b"], k, &[3, 4]) {
        Err(Error::BadTensor { .. }) => {}
        other => return Err(format!("wrong shape: expected BadTensor, got {other:?}")),
    }
    match vb.matrix_stack(&["a", "nope"], k, &[3, 5]) {
        Err(Error::MissingTensor { .. }) => Ok(()),
        other => Err(format!("missing part: expected MissingTensor, got {other:?}")),
    }
}

/// BF16 matrices with the default dtype: F16 on adapters with shader-f16, BF16 on the others, every value exact
/// (read back through `linear` with identity rows of x: y[m, n] = w[n, m], one product each); a matrix with a
/// value beyond f16's range stays BF16 (and a stack holding one loads apart); rows the 16-bit kernels do not
/// read whole become F32; asked for F16 explicitly, a matrix past f16's range is a `ValueRange` error naming
/// it, not infinities.
async fn bf16_weights_default_dtype() -> Result<(), String> {
    use webvlm::loader::safetensors::ShardedSafetensors;
    use webvlm::nn::{LoadOptions, VarBuilder};
    let ctx = common::ctx().await;
    let mut rng = Rng::new(15);
    let (n, k) = (5, 32);
    let bf16 = |v: &[f32]| -> (Vec<f32>, Vec<u8>) {
        let h: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
        (h.iter().map(|x| x.to_f32()).collect(), h.iter().flat_map(|x| x.to_le_bytes()).collect())
    };
    // `s`: values f16 holds, up to 60000 and down to 3e-6 (below 2^-17 an f16 subnormal rounds the bf16 value)
    let mut fits = rng.vec(n * k, -1.0, 1.0);
    fits[3] = 60000.0;
    fits[7] = -3.0e-6;
    let mut past = rng.vec(n * k, -1.0, 1.0);
    past[9] = -1.0e5;
    let ((ws, bs), (wb, bb)) = (bf16(&fits), bf16(&past));
    let (wo, bo) = bf16(&rng.vec(n * 12, -1.0, 1.0));
    let file = safetensors(&[("s", "BF16", [n, k], bs), ("b", "BF16", [n, k], bb), ("o", "BF16", [n, 12], bo)]);
    let st = ShardedSafetensors::single("t.safetensors", Box::new(file)).map_err(|e| e.to_string())?;
    let f16 = ctx.caps.shader_f16;
    let vb = VarBuilder::new(&st, &ctx, LoadOptions::default());
    // `o`: rows of 12, which the 16-bit kernels do not read as whole words: f32 on every adapter
    let cases = [
        ("s", &ws, k, if f16 { DType::F16 } else { DType::BF16 }),
        ("b", &wb, k, DType::BF16),
        ("o", &wo, 12, DType::F32),
    ];
    for (name, want, k, dtype) in cases {
        let t = vb.matrix(name, [n, k]).map_err(|e| format!("{name}: {e}"))?;
        if t.dtype != dtype {
            return Err(format!("bf16 `{name}` loaded as {}, want {dtype} (shader-f16 {f16})", t.dtype));
        }
        let eye: Vec<f32> = (0..k * k).map(|i| if i / k == i % k { 1.0 } else { 0.0 }).collect();
        let x = ctx.upload_f32(&eye, &[k, k]).map_err(|e| e.to_string())?;
        let mut rec = Recorder::new(&ctx);
        let y = mm::linear(&mut rec, &x, &t, None).map_err(|e| e.to_string())?;
        rec.submit().map_err(|e| e.to_string())?;
        let y = ctx.read_f32(&y).await.map_err(|e| e.to_string())?;
        for (i, &v) in want.iter().enumerate() {
            let got = y[(i % k) * n + i / k];
            // exact, but for |v| < 2^-17 as f16: a subnormal, within half its spacing 2^-24
            let tol = if t.dtype == DType::F16 && v.abs() < 2f32.powi(-17) { 2f32.powi(-25) } else { 0.0 };
            if (got - v).abs() > tol {
                return Err(format!("bf16 `{name}` as {}: element {i} = {got}, stored {v}", t.dtype));
            }
        }
    }
    match vb.matrix_stack(&["s", "b"], k, &[n, n]) {
        Ok(None) if f16 => {}
        Ok(Some(t)) if !f16 && t.dtype == DType::BF16 => {}
        other => return Err(format!("stack with a value past f16 (shader-f16 {f16}): got {other:?}")),
    }
    let vb = VarBuilder::new(&st, &ctx, LoadOptions { dtype: Some(DType::F16), ..Default::default() });
    match vb.matrix("b", [n, k]) {
        Err(Error::ValueRange { what, value, .. }) if what.contains("`b`") && value == wb[9] => Ok(()),
        other => Err(format!("explicit f16 of a value past 65504: expected ValueRange naming `b`, got {other:?}")),
    }
}

async fn typed_errors() -> Result<(), String> {
    let ctx = common::ctx().await;
    let x = ctx.upload_f32(&[0.0; 2 * 64], &[2, 64]).map_err(|e| e.to_string())?;
    let w = mm::upload_weight(&ctx, &[0.0; 3 * 96], &[3, 96], DType::Q4_0).map_err(|e| e.to_string())?;
    let mut rec = Recorder::new(&ctx);
    match mm::linear(&mut rec, &x, &w, None) {
        Err(Error::Shape { .. }) => {}
        other => return Err(format!("K mismatch: expected Error::Shape, got {other:?}")),
    }
    let w_ok = mm::upload_weight(&ctx, &[0.0; 3 * 64], &[3, 64], DType::F32).map_err(|e| e.to_string())?;
    let bad_bias = ctx.upload_f32(&[0.0; 4], &[4]).map_err(|e| e.to_string())?;
    match mm::linear(&mut rec, &x, &w_ok, Some(&bad_bias)) {
        Err(Error::Shape { .. }) => {}
        other => return Err(format!("bias length: expected Error::Shape, got {other:?}")),
    }
    match mm::upload_weight(&ctx, &[0.0; 2 * 40], &[2, 40], DType::Q8_0) {
        Err(Error::Shape { .. }) => {}
        other => return Err(format!("K % 32 != 0: expected Error::Shape, got {other:?}")),
    }
    let ids = ctx.upload_u32(&[0; 3 * 64], &[3, 64]).map_err(|e| e.to_string())?;
    match mm::linear(&mut rec, &x, &ids, None) {
        Err(Error::UnsupportedDtype { .. }) => {}
        other => return Err(format!("u32 weight: expected Error::UnsupportedDtype, got {other:?}")),
    }
    let xi = ctx.upload_u32(&[0; 64], &[1, 64]).map_err(|e| e.to_string())?;
    match mm::linear(&mut rec, &xi, &w_ok, None) {
        Err(Error::UnsupportedDtype { .. }) => {}
        other => return Err(format!("u32 x: expected Error::UnsupportedDtype, got {other:?}")),
    }
    // A weight larger than one storage binding is refused before anything is converted or allocated.
    let huge_rows = (ctx.caps.max_storage_binding / (4 * 1024)) as usize + 1;
    match mm::upload_weight(&ctx, &[], &[huge_rows, 1024], DType::F32) {
        Err(Error::LimitExceeded { limit, .. })
            if limit == "maxStorageBufferBindingSize" || limit == "maxBufferSize" => {}
        other => return Err(format!("over the binding limit: expected Error::LimitExceeded, got {other:?}")),
    }
    // the direct GEMM reads weight rows as vec4 words: a ragged K is refused, not read out of line
    let x37 = ctx.upload_f32(&[0.0; 2 * 37], &[2, 37]).map_err(|e| e.to_string())?;
    let w37 = mm::upload_weight(&ctx, &[0.0; 3 * 37], &[3, 37], DType::F32).map_err(|e| e.to_string())?;
    match mm::linear_with(&mut rec, &x37, &w37, None, mm::Path::Direct) {
        Err(Error::Shape { .. }) => {}
        other => return Err(format!("direct GEMM with K = 37: expected Error::Shape, got {other:?}")),
    }
    let a = ctx.upload_f32(&[0.0; 6], &[2, 3]).map_err(|e| e.to_string())?;
    let b = ctx.upload_f32(&[0.0; 8], &[4, 2]).map_err(|e| e.to_string())?;
    match mm::matmul(&mut rec, &a, &b, false) {
        Err(Error::Shape { .. }) => {}
        other => return Err(format!("matmul K mismatch: expected Error::Shape, got {other:?}")),
    }
    // matmul_strided: matrices outside their tensors, overlapping output batches, y aliasing x, K = 0
    use webvlm::ops::matmul::Strided;
    let a = ctx.upload_f32(&[0.0; 64], &[8, 8]).map_err(|e| e.to_string())?;
    let y = ctx.upload_f32(&[0.0; 64], &[8, 8]).map_err(|e| e.to_string())?;
    let st = |t, off, stride, batch| Strided { t, off, stride, batch };
    let cases = [
        ("x past its tensor", st(&a, 4, 8, 0), st(&a, 0, 8, 0), st(&y, 0, 8, 0), (8, 8, 8), 1),
        ("overlapping y batches", st(&a, 0, 8, 0), st(&a, 0, 8, 0), st(&y, 0, 8, 4), (2, 8, 8), 2),
        ("y aliasing x", st(&a, 0, 8, 0), st(&y, 0, 8, 0), st(&a, 0, 8, 0), (8, 8, 8), 1),
        ("K = 0", st(&a, 0, 8, 0), st(&a, 0, 8, 0), st(&y, 0, 8, 0), (8, 8, 0), 1),
        ("unaligned x offset", st(&a, 2, 8, 0), st(&a, 0, 8, 0), st(&y, 0, 8, 0), (4, 4, 4), 1),
    ];
    for (what, x, w, yy, mnk, b) in cases {
        match mm::matmul_strided(&mut rec, x, w, yy, mnk, b, 1.0) {
            Err(Error::Shape { .. }) => {}
            other => return Err(format!("matmul_strided {what}: expected Error::Shape, got {other:?}")),
        }
    }
    Ok(())
}

/// Loading in row chunks writes the same GPU words as the whole-tensor upload, for every stored dtype, with chunks
/// of one row (rounded to two where a word would straddle: f16 with odd columns, Q8_0/Q4_0 with an odd number of
/// blocks per row, whose scale words hold two blocks), a few rows, and more than the tensor.
async fn chunked_upload_equals_whole() -> Result<(), String> {
    use webvlm::loader::{quant, DType as FileDType};
    let ctx = common::ctx().await;
    let mut rng = Rng::new(11);
    let cases: [(DType, FileDType, usize, usize); 8] = [
        (DType::F32, FileDType::F32, 9, 37),
        (DType::F16, FileDType::F16, 9, 37),
        (DType::BF16, FileDType::BF16, 9, 37),
        (DType::F16, FileDType::F16, 6, 64),
        (DType::Q8_0, FileDType::Q8_0, 7, 96),
        (DType::Q4_0, FileDType::Q4_0, 7, 96),
        (DType::Q4_1, FileDType::Q4_1, 7, 96),
        (DType::Q8_0, FileDType::Q8_0, 5, 64),
    ];
    for (gd, fd, rows, cols) in cases {
        let data = rng.vec(rows * cols, -1.0, 1.0);
        let bytes: Vec<u8> = match fd {
            FileDType::F32 => bytemuck::cast_slice(&data).to_vec(),
            FileDType::F16 => data.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
            FileDType::BF16 => data.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
            q => quant::quantize(q, &data).map_err(|e| e.to_string())?,
        };
        let whole = mm::upload_ggml(&ctx, &bytes, &[rows, cols], gd).map_err(|e| e.to_string())?;
        let want = ctx.read_bytes(&whole, 0, whole.bytes()).await.map_err(|e| e.to_string())?;
        let row_bytes = bytes.len() / rows;
        for chunk in [1, row_bytes, 3 * row_bytes + 1, bytes.len() * 2] {
            let mut reads = Vec::new();
            let t = mm::upload_ggml_chunked(&ctx, &[rows, cols], gd, chunk, &mut |off, len| {
                reads.push((off, len));
                Ok(std::borrow::Cow::Borrowed(&bytes[off as usize..(off + len) as usize]))
            })
            .map_err(|e| e.to_string())?;
            let got = ctx.read_bytes(&t, 0, t.bytes()).await.map_err(|e| e.to_string())?;
            if got != want || t.scales_offset != whole.scales_offset {
                return Err(format!("{gd} [{rows}, {cols}] chunk {chunk}: GPU words differ from the whole upload"));
            }
            // the reads tile the tensor in order, and none is larger than the chunk unless one row (pair) is
            let covered: u64 = reads.iter().map(|r| r.1).sum();
            let contiguous = reads.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0);
            let max = reads.iter().map(|r| r.1 as usize).max().unwrap_or(0);
            if covered != bytes.len() as u64 || !contiguous || max > chunk.max(2 * row_bytes) {
                return Err(format!("{gd} [{rows}, {cols}] chunk {chunk}: reads {reads:?}"));
            }
        }
    }
    // a reader that returns the wrong length is an error, not a corrupt tensor
    let e = mm::upload_ggml_chunked(&ctx, &[4, 32], DType::F32, 128, &mut |_, len| {
        Ok(std::borrow::Cow::Owned(vec![0; len as usize - 1]))
    });
    if e.is_ok() {
        return Err("short read accepted".into());
    }
    Ok(())
}

/// `linear_rows` on views inside larger tensors: x's rows 64.. into y's rows 128.. (with the residual's same rows),
/// every GEMM path that runs here, float and quantized weights, with and without the activation: the rows written
/// match the f64 reference within the bound of [`run_fused`], every other row of y keeps its sentinel, and views
/// that are not rows of the tensor, unaligned or aliasing y are typed errors.
async fn linear_rows_on_views() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(23);
    let mut paths = vec![Path::Auto, Path::Gemm, Path::Direct];
    if direct_subgroups(&ctx) {
        paths.push(Path::DirectSubgroups);
    }
    let (mx, my, k, n, rows) = (192, 256, 64, 36, 70);
    for (i, dtype) in [DType::F32, DType::F16, DType::Q4_1, DType::Q8_0, DType::BF16].into_iter().enumerate() {
        for (j, &path) in paths.iter().enumerate() {
            let act = [None, Some(Unary::GeluTanh)][(i + j) % 2];
            let what = format!("linear_rows {dtype} {path:?} {act:?}");
            let x = rng.vec(mx * k, -1.0, 1.0);
            let w = rng.vec(n * k, -1.0, 1.0);
            let b = rng.vec(n, -1.0, 1.0);
            let r = rng.vec(my * n, -4.0, 4.0);
            let w_deq = mm::cpu_roundtrip(&w, dtype).map_err(|e| format!("{what}: {e}"))?;
            let tw = mm::upload_weight(&ctx, &w, &[n, k], dtype).map_err(|e| format!("{what}: {e}"))?;
            let tx = ctx.upload_f32(&x, &[mx, k]).map_err(|e| e.to_string())?;
            let tb = ctx.upload_f32(&b, &[n]).map_err(|e| e.to_string())?;
            let tr = ctx.upload_f32(&r, &[my, n]).map_err(|e| e.to_string())?;
            let ty = ctx.upload_f32(&vec![-7.0; my * n], &[my, n]).map_err(|e| e.to_string())?;
            let mut rec = Recorder::new(&ctx);
            let (xv, yv) = (mm::Rows { t: &tx, row0: 64, rows }, mm::Rows { t: &ty, row0: 128, rows });
            mm::linear_rows(&mut rec, xv, &tw, Some(&tb), yv, act, Some(&tr), path)
                .map_err(|e| format!("{what}: {e}"))?;
            rec.submit().map_err(|e| format!("{what}: {e}"))?;
            let got = ctx.read_f32(&ty).await.map_err(|e| e.to_string())?;
            let xs = &x[64 * k..(64 + rows) * k];
            let lin = mm::cpu_linear(xs, rows, k, &w_deq, n, Some(&b));
            let activated = act.map_or(lin.clone(), |op| ew::cpu_unary(op, &lin));
            for row in 0..my {
                for c in 0..n {
                    let gv = got[row * n + c] as f64;
                    let Some(i) = row.checked_sub(128).filter(|&i| i < rows) else {
                        if gv != -7.0 {
                            return Err(format!("{what}: y[{row}, {c}] = {gv} outside the view"));
                        }
                        continue;
                    };
                    let want = activated[i * n + c] as f64 + r[row * n + c] as f64;
                    let eb = bound(xs, k, &w_deq, Some(&b), dtype.is_quantized(), i, c, lin[i * n + c]);
                    let tol = 1.13 * eb + 2e-6 * (1.0 + want.abs()) + U * want.abs() + 1e-30;
                    if !((gv - want).abs() <= tol) {
                        return Err(format!("{what}: y[{row}, {c}] = {gv}, want {want} (tol {tol:e})"));
                    }
                }
            }
        }
    }
    let tw = mm::upload_weight(&ctx, &[0.0; 4 * 64], &[4, 64], DType::F32).map_err(|e| e.to_string())?;
    let tx = ctx.upload_f32(&[0.0; 130 * 64], &[130, 64]).map_err(|e| e.to_string())?;
    let ty = ctx.upload_f32(&[0.0; 130 * 4], &[130, 4]).map_err(|e| e.to_string())?;
    let v = |t, row0, rows| mm::Rows { t, row0, rows };
    let mut cases = vec![
        ("rows past the tensor", v(&tx, 100, 64), v(&ty, 0, 64), None),
        ("x and y rows differ", v(&tx, 0, 64), v(&ty, 0, 63), None),
        ("y aliasing the residual", v(&tx, 0, 64), v(&ty, 0, 64), Some(&ty)),
    ];
    // a one-row offset of y (16 bytes) is unaligned where the adapter asks for more than that
    if ctx.caps.min_storage_align > 16 {
        cases.push(("an unaligned y offset", v(&tx, 0, 64), v(&ty, 1, 64), None));
    }
    for (what, xv, yv, res) in cases {
        match mm::linear_rows(&mut Recorder::new(&ctx), xv, &tw, None, yv, None, res, Path::Auto) {
            Err(Error::Shape { .. }) => {}
            other => return Err(format!("linear_rows, {what}: expected Error::Shape, got {other:?}")),
        }
    }
    let tx2 = ctx.upload_f32(&[0.0; 130 * 4], &[130, 4]).map_err(|e| e.to_string())?;
    let tw2 = mm::upload_weight(&ctx, &[0.0; 16], &[4, 4], DType::F32).map_err(|e| e.to_string())?;
    match mm::linear_rows(&mut Recorder::new(&ctx), v(&ty, 0, 64), &tw2, None, v(&ty, 64, 64), None, None, Path::Auto) {
        Err(Error::Shape { .. }) => {}
        other => return Err(format!("linear_rows, x aliasing y: expected Error::Shape, got {other:?}")),
    }
    drop(tx2);
    Ok(())
}

/// The ViT MLP in row chunks (`nn::Mlp::forward_residual` where the hidden activation of all rows exceeds
/// `ops::BLOCK_BYTES`: 700 rows × 2048 features = 5.7 MB, two chunks of 384 and 316 rows) gives bit for bit what
/// the same kernels give over all rows at once (fc1 with the GELU, fc2 with the residual), float and quantized.
async fn mlp_row_chunks_equal_whole() -> Result<(), String> {
    use webvlm::nn::{Activation, Linear, Mlp};
    let ctx = common::ctx().await;
    let mut rng = Rng::new(29);
    let (m, d, inter) = (700, 64, 2048);
    for dtype in [DType::F32, DType::Q4_1] {
        let lin = |rng: &mut Rng, n: usize, k: usize| -> Result<Linear, String> {
            let w = mm::upload_weight(&ctx, &rng.vec(n * k, -0.2, 0.2), &[n, k], dtype).map_err(|e| e.to_string())?;
            let b = ctx.upload_f32(&rng.vec(n, -0.5, 0.5), &[n]).map_err(|e| e.to_string())?;
            Ok(Linear { w, b: Some(b) })
        };
        let mlp = Mlp { fc1: lin(&mut rng, inter, d)?, fc2: lin(&mut rng, d, inter)?, act: Activation::GeluTanh };
        let x = ctx.upload_f32(&rng.vec(m * d, -1.0, 1.0), &[m, d]).map_err(|e| e.to_string())?;
        let r = ctx.upload_f32(&rng.vec(m * d, -1.0, 1.0), &[m, d]).map_err(|e| e.to_string())?;
        let mut rec = Recorder::new(&ctx);
        let chunked = mlp.forward_residual(&mut rec, x.clone(), Some(&r)).map_err(|e| e.to_string())?;
        let act = Fused { act: Some(Unary::GeluTanh), ..Fused::default() };
        let h = mm::linear_fused(&mut rec, &x, &mlp.fc1.w, mlp.fc1.b.as_ref(), act, Path::Auto)
            .map_err(|e| e.to_string())?;
        let res = Fused { residual: Some(&r), ..Fused::default() };
        let whole = mm::linear_fused(&mut rec, &h, &mlp.fc2.w, mlp.fc2.b.as_ref(), res, Path::Auto)
            .map_err(|e| e.to_string())?;
        let chunks = (0..m).step_by(384).count();
        rec.submit().map_err(|e| e.to_string())?;
        let (a, b) = (
            ctx.read_f32(&chunked).await.map_err(|e| e.to_string())?,
            ctx.read_f32(&whole).await.map_err(|e| e.to_string())?,
        );
        if chunked.shape != [m, d] || a != b {
            let first = a.iter().zip(&b).position(|(p, q)| p != q);
            return Err(format!("{dtype}: {chunks} chunks differ from the whole-rows product (shape {:?}, first difference at {first:?})", chunked.shape));
        }
    }
    Ok(())
}

mod run {
    crate::gpu_tests!(
        chunked_upload_equals_whole,
        linear_float,
        linear_swiglu,
        linear_fused,
        linear_rows_on_views,
        mlp_row_chunks_equal_whole,
        linear_rope_qkv,
        stacked_weights_equal_their_parts,
        bf16_weights_default_dtype,
        linear_quant,
        linear_plain_context,
        linear_keeps_leading_dims,
        matmul_general,
        dequant_matches_gguf_fixtures,
        typed_errors,
    );
}
