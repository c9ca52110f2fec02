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

mod run {
    crate::gpu_tests!(unary_ops, binary_ops_with_broadcast, binary_shape_mismatch_is_typed_error);
}
