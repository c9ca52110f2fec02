//! DINOv2 vision tower parity against Hugging Face `transformers` goldens: a tiny random
//! `LlavaForConditionalGeneration` with a `Dinov2Model` tower (tests/fixtures/models/llava_dinov2, made by
//! scripts/make_dinov2_fixture.py): embeddings (CLS + patches + positions), encoder layers (layer scale), the
//! final layernorm, the projector on the CLS-dropped features (strategy "default"), logits and 20 greedy tokens;
//! and the tower at non-native image sizes (bicubic position-embedding interpolation, incl. a non-square image).
//!
//! Tolerance as tests/models.rs: 1e-4 × max|golden| + 1e-5; greedy tokens identical.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use webvlm::gpu::{GpuContext, Recorder, Tensor};
use webvlm::loader::safetensors::ShardedSafetensors;
use webvlm::models::{MemoryFiles, Model};
use webvlm::nn::LoadOptions;
use webvlm::testing::check_close;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

macro_rules! fixture {
    ($file:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/models/llava_dinov2/", $file)).as_slice()
    };
}

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

struct Golden {
    st: ShardedSafetensors,
    json: serde_json::Value,
}

impl Golden {
    fn new() -> Result<Self, String> {
        Ok(Self {
            st: ShardedSafetensors::single("golden", Box::new(fixture!("golden.safetensors").to_vec())).map_err(e)?,
            json: serde_json::from_slice(fixture!("golden.json")).map_err(e)?,
        })
    }
    fn f32(&self, name: &str) -> Result<Vec<f32>, String> {
        self.st.tensor_f32(name).map_err(|x| format!("golden {name}: {x}"))
    }
    fn ids(&self, key: &str) -> Vec<u32> {
        self.json[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
    }
}

fn files(extra: &[(&str, &[u8])]) -> MemoryFiles {
    let mut m: BTreeMap<String, Arc<Vec<u8>>> = BTreeMap::new();
    m.insert("config.json".into(), Arc::new(fixture!("config.json").to_vec()));
    m.insert("model.safetensors".into(), Arc::new(fixture!("model.safetensors").to_vec()));
    for (n, b) in extra {
        m.insert(n.to_string(), Arc::new(b.to_vec()));
    }
    MemoryFiles(m)
}

async fn compare(ctx: &GpuContext, what: &str, t: &Tensor, want: &[f32]) -> Result<(), String> {
    let got = ctx.read_f32(t).await.map_err(e)?;
    let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = check_close(what, &got, want, 1e-4 * max + 1e-5, 0.0)?;
    println!("{what}: max abs err {:.3e} (max |golden| {max:.3}), mean {:.3e}", d.max_abs, d.mean_abs);
    Ok(())
}

async fn llava_dinov2() -> Result<(), String> {
    let ctx = common::ctx().await;
    let model = Model::load_hf(&ctx, &files(&[]), LoadOptions::default(), 256).map_err(e)?;
    let g = Golden::new()?;
    let vision = model.vision.as_ref().ok_or("no vision stack")?;
    if !vision.tower.has_cls() || vision.image_seq_len() != 64 {
        return Err(format!("expected a DINOv2 tower with 64 image tokens, got {}", vision.image_seq_len()));
    }
    let s = vision.tower.cfg.image_size;
    let pixels = ctx.upload_f32(&g.f32("pixel_values")?, &[3, s, s]).map_err(e)?;
    let mut rec = Recorder::new(&ctx);
    let emb = vision.tower.embed(&mut rec, &pixels).map_err(e)?;
    let l0 = vision.tower.forward(&mut rec, &pixels, Some(1)).map_err(e)?;
    let out = vision.tower.forward(&mut rec, &pixels, None).map_err(e)?;
    let img = vision.encode(&mut rec, &pixels).map_err(e)?;
    let ids = g.ids("input_ids");
    let x = model.embed_prompt(&mut rec, &ids, &[img.clone()]).map_err(e)?;
    let mut cache = model.lm.new_cache(&ctx).map_err(e)?;
    let logits = model.lm.forward(&mut rec, &x, &mut cache, true).map_err(e)?;
    rec.submit().map_err(e)?;
    compare(&ctx, "dinov2 embeddings (CLS + patches + pos)", &emb, &g.f32("vision_embeddings")?).await?;
    compare(&ctx, "dinov2 layer 0", &l0.last_layer, &g.f32("vision_hidden_layer0")?).await?;
    compare(&ctx, "dinov2 last layer (LLaVA feature)", &out.last_layer, &g.f32("vision_feature")?).await?;
    compare(
        &ctx,
        "dinov2 last_hidden_state (layernorm)",
        out.post_norm.as_ref().ok_or("no layernorm")?,
        &g.f32("vision_last_hidden_state")?,
    )
    .await?;
    compare(&ctx, "llava-dinov2 projector (CLS dropped)", &img, &g.f32("projector")?).await?;
    compare(&ctx, "llava-dinov2 inputs_embeds", &x, &g.f32("inputs_embeds")?).await?;
    compare(&ctx, "llava-dinov2 logits", &logits, &g.f32("logits")?).await?;
    common::expect_greedy(&ctx, "llava-dinov2", &model, &x, &ids, &g.ids("greedy_tokens")).await?;
    Ok(())
}

/// The tower at image sizes other than the pretraining one: the position embeddings are interpolated (bicubic,
/// as `interpolate_pos_encoding`), including a non-square image.
async fn dinov2_interpolated_sizes() -> Result<(), String> {
    let ctx = common::ctx().await;
    let model = Model::load_hf(&ctx, &files(&[]), LoadOptions::default(), 256).map_err(e)?;
    let g = Golden::new()?;
    let tower = &model.vision.as_ref().ok_or("no vision stack")?.tower;
    for (h, w) in [(24usize, 24usize), (48, 48), (40, 28)] {
        let key = format!("interp_{h}x{w}");
        let pixels = ctx.upload_f32(&g.f32(&format!("{key}_pixel_values"))?, &[3, h, w]).map_err(e)?;
        let mut rec = Recorder::new(&ctx);
        let emb = tower.embed(&mut rec, &pixels).map_err(e)?;
        let out = tower.forward(&mut rec, &pixels, None).map_err(e)?;
        rec.submit().map_err(e)?;
        compare(&ctx, &format!("{key} embeddings"), &emb, &g.f32(&format!("{key}_embeddings"))?).await?;
        let post = out.post_norm.as_ref().ok_or("no layernorm")?;
        compare(&ctx, &format!("{key} last_hidden_state"), post, &g.f32(&format!("{key}_last_hidden_state"))?).await?;
    }
    Ok(())
}

/// A processor config with another crop size makes the tower run at that size: image_seq_len follows.
async fn dinov2_runs_at_processor_size() -> Result<(), String> {
    let ctx = common::ctx().await;
    let pre = br#"{"do_center_crop": true, "crop_size": {"height": 24, "width": 24}, "size": {"shortest_edge": 24}}"#;
    let model =
        Model::load_hf(&ctx, &files(&[("preprocessor_config.json", pre)]), LoadOptions::default(), 256).map_err(e)?;
    let g = Golden::new()?;
    let v = model.vision.as_ref().ok_or("no vision stack")?;
    if v.tower.cfg.image_size != 24 || v.image_seq_len() != 36 {
        return Err(format!("image size {} / seq len {}, want 24 / 36", v.tower.cfg.image_size, v.image_seq_len()));
    }
    let pixels = ctx.upload_f32(&g.f32("interp_24x24_pixel_values")?, &[3, 24, 24]).map_err(e)?;
    let mut rec = Recorder::new(&ctx);
    let img = v.encode(&mut rec, &pixels).map_err(e)?;
    rec.submit().map_err(e)?;
    if img.shape[..] != [36, 64] {
        return Err(format!("projected features {:?}, want [36, 64]", img.shape));
    }
    Ok(())
}

mod run {
    crate::gpu_tests!(llava_dinov2, dinov2_interpolated_sizes, dinov2_runs_at_processor_size);
}
