//! Vision ops against their CPU references: unfold (including images that are not a whole number of patches),
//! the patch embedding against a direct convolution, and the pixel shuffle against a hand-checked case and the
//! PyTorch view/permute chain on random grids.

mod common;

use webvlm::gpu::Recorder;
use webvlm::ops::vision as vi;
use webvlm::testing::{check_close, Rng};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

async fn unfold_and_patch_embed_match_reference() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(31);
    for (c, h, w, p, d) in
        [(3, 8, 8, 4, 5), (3, 14, 10, 3, 7), (1, 5, 5, 5, 3), (3, 32, 32, 16, 24), (3, 28, 42, 14, 19)]
    {
        let px = rng.vec(c * h * w, -1.0, 1.0);
        let wt = rng.normal_vec(d * c * p * p, 0.1);
        let b = rng.vec(d, -0.5, 0.5);
        let tp = ctx.upload_f32(&px, &[c, h, w]).map_err(e)?;
        let tw = ctx.upload_f32(&wt, &[d, c * p * p]).map_err(e)?;
        let tb = ctx.upload_f32(&b, &[d]).map_err(e)?;
        let mut rec = Recorder::new(&ctx);
        let un = vi::unfold(&mut rec, &tp, p).map_err(e)?;
        let emb = vi::patch_embed(&mut rec, &tp, &tw, &tb, p).map_err(e)?;
        rec.submit().map_err(e)?;
        let n = (h / p) * (w / p);
        if emb.shape != [n, d] {
            return Err(format!("patch_embed shape {:?}, want [{n}, {d}]", emb.shape));
        }
        let got = ctx.read_f32(&un).await.map_err(e)?;
        check_close(&format!("unfold c={c} h={h} w={w} p={p}"), &got, &vi::cpu_unfold(&px, c, h, w, p), 0.0, 0.0)?;
        let got = ctx.read_f32(&emb).await.map_err(e)?;
        let want = vi::cpu_patch_embed(&px, c, h, w, &wt, &b, d, p);
        check_close(&format!("patch_embed c={c} h={h} w={w} p={p} d={d}"), &got, &want, 1e-5, 1e-4)?;
    }
    Ok(())
}

/// g = 4, r = 2, D = 1 by hand: output token (yb, xb) is the 2×2 block at rows 2yb..2yb+2, cols 2xb..2xb+2,
/// read row by row; with D = 2 each entry becomes its two channels.
async fn pixel_shuffle_hand_checked() -> Result<(), String> {
    let ctx = common::ctx().await;
    let x: Vec<f32> = (0..16).map(|i| i as f32).collect();
    let want = [0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.];
    let x2: Vec<f32> = (0..32).map(|i| i as f32).collect();
    // token t has channels (2t, 2t+1)
    let want2: Vec<f32> = want.iter().flat_map(|&t| [2.0 * t, 2.0 * t + 1.0]).collect();
    for (x, d, want) in [(&x, 1, want.to_vec()), (&x2, 2, want2)] {
        let tx = ctx.upload_f32(x, &[16, d]).map_err(e)?;
        let mut rec = Recorder::new(&ctx);
        let out = vi::pixel_shuffle(&mut rec, &tx, 4, 2).map_err(e)?;
        rec.submit().map_err(e)?;
        if out.shape != [4, 4 * d] {
            return Err(format!("pixel_shuffle shape {:?}", out.shape));
        }
        let got = ctx.read_f32(&out).await.map_err(e)?;
        check_close(&format!("pixel_shuffle by hand, D={d}"), &got, &want, 0.0, 0.0)?;
        check_close(&format!("cpu_pixel_shuffle by hand, D={d}"), &vi::cpu_pixel_shuffle(x, 4, 2, d), &want, 0.0, 0.0)?;
    }
    Ok(())
}

async fn pixel_shuffle_matches_reference() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(32);
    // (grid, r, D): SmolVLM-256M is (32, 4, 768) — 1024 patches → 64 tokens of 12288
    for (g, r, d) in [(8, 2, 5), (6, 3, 7), (2, 1, 3), (32, 4, 12), (32, 4, 768)] {
        let x = rng.vec(g * g * d, -1.0, 1.0);
        let tx = ctx.upload_f32(&x, &[g * g, d]).map_err(e)?;
        let mut rec = Recorder::new(&ctx);
        let out = vi::pixel_shuffle(&mut rec, &tx, g, r).map_err(e)?;
        rec.submit().map_err(e)?;
        let got = ctx.read_f32(&out).await.map_err(e)?;
        check_close(&format!("pixel_shuffle g={g} r={r} d={d}"), &got, &vi::cpu_pixel_shuffle(&x, g, r, d), 0.0, 0.0)?;
    }
    Ok(())
}

async fn vision_errors_are_typed() -> Result<(), String> {
    use webvlm::Error;
    let ctx = common::ctx().await;
    let t = |shape: &[usize]| ctx.zeros(shape, webvlm::gpu::DType::F32).unwrap();
    let mut rec = Recorder::new(&ctx);
    let cases = [
        ("grid² != N", vi::pixel_shuffle(&mut rec, &t(&[15, 4]), 4, 2).err()),
        ("grid % r != 0", vi::pixel_shuffle(&mut rec, &t(&[36, 4]), 6, 4).err()),
        ("pixels not [C, H, W]", vi::unfold(&mut rec, &t(&[3, 64]), 4).err()),
        ("patch larger than image", vi::unfold(&mut rec, &t(&[3, 4, 8]), 5).err()),
        ("weight K mismatch", vi::patch_embed(&mut rec, &t(&[3, 8, 8]), &t(&[5, 47]), &t(&[5]), 4).err()),
        ("bias mismatch", vi::patch_embed(&mut rec, &t(&[3, 8, 8]), &t(&[5, 48]), &t(&[6]), 4).err()),
    ];
    for (what, r) in cases {
        if !matches!(r, Some(Error::Shape { .. })) {
            return Err(format!("{what}: expected a Shape error, got {r:?}"));
        }
    }
    if !rec.is_empty() {
        return Err("failed ops must record nothing".into());
    }
    Ok(())
}

mod run {
    crate::gpu_tests!(
        unfold_and_patch_embed_match_reference,
        pixel_shuffle_hand_checked,
        pixel_shuffle_matches_reference,
        vision_errors_are_typed
    );
}
