//! Elementwise kernels against their CPU references on random inputs of odd sizes.

mod common;

use webvlm::gpu::Recorder;
use webvlm::ops::elementwise::{self as ew, Binary, Unary};
use webvlm::testing::{check_close, Rng};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

const SIZES: &[(usize, usize)] = &[(1, 1), (3, 7), (5, 129), (17, 255), (1, 70_001)];

async fn unary_ops() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(1);
    for &(r, c) in SIZES {
        let a = rng.vec(r * c, -6.0, 6.0);
        let ta = ctx.upload_f32(&a, &[r, c]).map_err(|e| e.to_string())?;
        for op in [Unary::GeluTanh, Unary::GeluErf, Unary::Silu] {
            let mut rec = Recorder::new(&ctx);
            let out = ew::unary(&mut rec, op, &ta).map_err(|e| e.to_string())?;
            rec.submit().map_err(|e| e.to_string())?;
            let got = ctx.read_f32(&out).await.map_err(|e| e.to_string())?;
            check_close(&format!("{op:?} [{r},{c}]"), &got, &ew::cpu_unary(op, &a), 2e-6, 2e-6)?;
        }
        let mut rec = Recorder::new(&ctx);
        let out = ew::scale(&mut rec, &ta, -0.37).map_err(|e| e.to_string())?;
        rec.submit().map_err(|e| e.to_string())?;
        let got = ctx.read_f32(&out).await.map_err(|e| e.to_string())?;
        let want: Vec<f32> = a.iter().map(|x| x * -0.37).collect();
        check_close("scale", &got, &want, 0.0, 0.0)?;
    }
    Ok(())
}

async fn binary_ops_with_broadcast() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(2);
    for &(r, c) in SIZES {
        let a = rng.vec(r * c, -4.0, 4.0);
        let full = rng.vec(r * c, -4.0, 4.0);
        let row = rng.vec(c, -4.0, 4.0);
        let ta = ctx.upload_f32(&a, &[r, c]).map_err(|e| e.to_string())?;
        for (b, shape) in [(&full, vec![r, c]), (&row, vec![c])] {
            let tb = ctx.upload_f32(b, &shape).map_err(|e| e.to_string())?;
            // all three ops in one submission
            let mut rec = Recorder::new(&ctx);
            let outs: Vec<_> = [Binary::Add, Binary::Mul, Binary::SwiGlu]
                .into_iter()
                .map(|op| ew::binary(&mut rec, op, &ta, &tb).map(|t| (op, t)))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            rec.submit().map_err(|e| e.to_string())?;
            for (op, out) in outs {
                let got = ctx.read_f32(&out).await.map_err(|e| e.to_string())?;
                check_close(&format!("{op:?} [{r},{c}] b={shape:?}"), &got, &ew::cpu_binary(op, &a, b), 1e-6, 2e-6)?;
            }
        }
    }
    Ok(())
}

async fn binary_shape_mismatch_is_typed_error() -> Result<(), String> {
    let ctx = common::ctx().await;
    let a = ctx.upload_f32(&[0.0; 12], &[3, 4]).map_err(|e| e.to_string())?;
    let b = ctx.upload_f32(&[0.0; 5], &[5]).map_err(|e| e.to_string())?;
    let mut rec = Recorder::new(&ctx);
    match ew::add(&mut rec, &a, &b) {
        Err(webvlm::Error::Shape { .. }) => Ok(()),
        other => Err(format!("expected a Shape error, got {other:?}")),
    }
}

/// GPU time per kernel through `finish_profiling`, the path that works in the browser too (there the timestamps
/// of each submission are read only when profiling finishes).
async fn profiling_counts_every_dispatch() -> Result<(), String> {
    use webvlm::gpu::{GpuContext, GpuOptions};
    let ctx = GpuContext::new(GpuOptions { allow_timestamps: true, ..GpuOptions::default() })
        .await
        .map_err(|e| e.to_string())?;
    if !ctx.caps.timestamps {
        return match ctx.start_profiling() {
            Err(webvlm::Error::MissingFeature { .. }) => Ok(()),
            other => Err(format!("no timestamps: expected MissingFeature, got {other:?}")),
        };
    }
    let n = 1 << 18;
    let x: Vec<f32> = (0..n).map(|i| (i % 97) as f32 - 48.0).collect();
    let t = ctx.upload_f32(&x, &[n]).map_err(|e| e.to_string())?;
    ctx.start_profiling().map_err(|e| e.to_string())?;
    let mut outs = Vec::new();
    for _ in 0..2 {
        // two submissions: both must be counted
        let mut rec = Recorder::new(&ctx);
        let a = ew::scale(&mut rec, &t, 2.0).map_err(|e| e.to_string())?;
        let b = ew::scale(&mut rec, &a, 0.5).map_err(|e| e.to_string())?;
        outs.push(ew::unary(&mut rec, Unary::Silu, &b).map_err(|e| e.to_string())?);
        rec.submit().map_err(|e| e.to_string())?;
    }
    let p = ctx.finish_profiling().await.map_err(|e| e.to_string())?;
    if ctx.profiling() {
        return Err("still profiling after finish_profiling".into());
    }
    let want = ew::cpu_unary(Unary::Silu, &x);
    for c in &outs {
        check_close(
            "silu(scale(scale(x))), profiled",
            &ctx.read_f32(c).await.map_err(|e| e.to_string())?,
            &want,
            1e-6,
            1e-5,
        )?;
    }
    let dispatches: u64 = p.kernels.iter().map(|k| k.dispatches).sum();
    let scale = p.kernels.iter().find(|k| k.kernel.starts_with("elementwise:") && k.dispatches == 4);
    if p.submissions != 2 || dispatches != 6 || p.kernels.len() != 2 || scale.is_none() || p.untimed_dispatches != 0 {
        return Err(format!("expected 2 submissions, scale × 4 and silu × 2: {p:?}"));
    }
    // browsers may quantize timestamps (100 µs): the sum, not each kernel, must be positive
    if !(p.gpu_ms > 0.0 && p.gpu_ms < 10_000.0) || p.kernels.iter().any(|k| k.gpu_ms < 0.0) {
        return Err(format!("implausible GPU times: {p:?}"));
    }
    Ok(())
}

mod run {
    crate::gpu_tests!(
        unary_ops,
        binary_ops_with_broadcast,
        binary_shape_mismatch_is_typed_error,
        profiling_counts_every_dispatch
    );
}
