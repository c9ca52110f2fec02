//! Model parity against Hugging Face `transformers` goldens for tiny random checkpoints
//! (tests/fixtures/models, made by scripts/make_model_fixtures.py): intermediate activations, logits and 20
//! greedy tokens, for LlamaForCausalLM (tied; untied with llama3 rope scaling), Idefics3ForConditionalGeneration
//! (from safetensors and from the GGUF text model + mmproj conversion) and a LLaVA-style SigLIP model.
//!
//! Tolerance: the fixtures are f32; our kernels accumulate in f32 in a different order than PyTorch, so errors of
//! a few ulps per op compound over layers. We allow 1e-4 × max|golden| + 1e-5 (the fixture README's
//! recommendation), and require the greedy tokens to be identical (every step's top-1 margin is ≥ 0.05 in the
//! goldens, far above that error).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use webvlm::engine::{ChatRequest, ChatStats, Engine};
use webvlm::generation::{generate, CancelToken, GenerationConfig};
use webvlm::gpu::{GpuContext, Recorder, Tensor};
use webvlm::loader::safetensors::ShardedSafetensors;
use webvlm::models::{MemoryFiles, Model};
use webvlm::nn::LoadOptions;
use webvlm::testing::check_close;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

macro_rules! fixture {
    ($name:literal, $file:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/models/", $name, "/", $file)).as_slice()
    };
}

/// The fixture checkpoint `$name` (config.json + model.safetensors) loaded with `$opts`, a 256-token context.
macro_rules! fixture_model {
    ($ctx:expr, $name:literal, $opts:expr) => {{
        let f = files(&[
            ("config.json", fixture!($name, "config.json")),
            ("model.safetensors", fixture!($name, "model.safetensors")),
        ]);
        Model::load_hf($ctx, &f, $opts, 256).map_err(e)
    }};
}

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

struct Golden {
    st: ShardedSafetensors,
    json: serde_json::Value,
}

impl Golden {
    fn new(st: &'static [u8], json: &'static [u8]) -> Result<Self, String> {
        Ok(Self {
            st: ShardedSafetensors::single("golden", Box::new(st.to_vec())).map_err(e)?,
            json: serde_json::from_slice(json).map_err(e)?,
        })
    }
    fn f32(&self, name: &str) -> Result<Vec<f32>, String> {
        self.st.tensor_f32(name).map_err(|x| format!("golden {name}: {x}"))
    }
    fn ids(&self, key: &str) -> Vec<u32> {
        json_ids(&self.json[key])
    }
}

/// A JSON array of token ids.
fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
}

fn files(pairs: &[(&str, &'static [u8])]) -> MemoryFiles {
    MemoryFiles(pairs.iter().map(|(n, b)| (n.to_string(), Arc::new(b.to_vec()))).collect::<BTreeMap<_, _>>())
}

async fn compare(ctx: &GpuContext, what: &str, t: &Tensor, want: &[f32]) -> Result<(), String> {
    let got = ctx.read_f32(t).await.map_err(e)?;
    let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = check_close(what, &got, want, 1e-4 * max + 1e-5, 0.0)?;
    // the numbers behind the tolerance, for the log
    println!("{what}: max abs err {:.3e} (max |golden| {max:.3}), mean {:.3e}", d.max_abs, d.mean_abs);
    Ok(())
}

async fn llama_tied() -> Result<(), String> {
    let ctx = common::ctx().await;
    let model = fixture_model!(&ctx, "llama", LoadOptions::default())?;
    let g = Golden::new(fixture!("llama", "golden.safetensors"), fixture!("llama", "golden.json"))?;
    llama_checks(&ctx, "llama", &model, &g).await
}

/// The same checks with q/k/v and gate/up loaded as separate weights (the path of checkpoints whose projections
/// differ in dtype): both layouts of the decoder must match the goldens.
async fn llama_separate_projections() -> Result<(), String> {
    let ctx = common::ctx().await;
    let opts = LoadOptions { separate_projections: true, ..Default::default() };
    let model = fixture_model!(&ctx, "llama", opts)?;
    let g = Golden::new(fixture!("llama", "golden.safetensors"), fixture!("llama", "golden.json"))?;
    llama_checks(&ctx, "llama (separate projections)", &model, &g).await
}

async fn llama_untied_llama3_rope() -> Result<(), String> {
    let ctx = common::ctx().await;
    let model = fixture_model!(&ctx, "llama_untied", LoadOptions::default())?;
    let g = Golden::new(fixture!("llama_untied", "golden.safetensors"), fixture!("llama_untied", "golden.json"))?;
    llama_checks(&ctx, "llama_untied", &model, &g).await
}

/// Hugging Face's repetition penalty (`generate(repetition_penalty=…)` on the same checkpoint,
/// scripts/make_penalty_fixture.py): the prompt's ids are penalized from the first step, each distinct id once;
/// 1.3 (the plain greedy tokens repeat one id 6 times) and 0.7 (a reward). Greedy tokens exact.
async fn llama_repetition_penalty() -> Result<(), String> {
    let ctx = common::ctx().await;
    let model = fixture_model!(&ctx, "llama", LoadOptions::default())?;
    let golden: serde_json::Value = serde_json::from_slice(fixture!("llama", "penalty.json")).map_err(e)?;
    let ids = json_ids(&golden["input_ids"]);
    let runs = golden["runs"].as_array().ok_or("penalty.json: no runs")?;
    for run in runs {
        let penalty = run["repetition_penalty"].as_f64().ok_or("no penalty")? as f32;
        let want = json_ids(&run["tokens"]);
        let mut rec = Recorder::new(&ctx);
        let x = model.embed_prompt(&mut rec, &ids, &[]).map_err(e)?;
        rec.submit().map_err(e)?;
        let toks = common::greedy(&ctx, &model, &x, &ids, want.len(), penalty).await?;
        if toks != want {
            return Err(format!("repetition penalty {penalty}: tokens differ\n got  {toks:?}\n want {want:?}"));
        }
    }
    Ok(())
}

/// Where generation stops, the KV cache holds exactly the rows of the steps whose tokens were used, pipelined or
/// not: a pipelined decode submits each step before reading the id of the one before, and a step it then does not
/// need (after a stop token, `max_new_tokens` or the caller's stop) gives its row back. Against the greedy goldens:
/// stopped on a stop token at position k, the cache has the prompt and tokens 0 .. k (the stop token's own row is
/// not there), and generating on from that cache with the stop token as the next input gives the goldens' next
/// tokens.
async fn llama_stops_leave_the_cache_whole() -> Result<(), String> {
    use webvlm::generation::StopReason;
    let ctx = common::ctx().await;
    let model = fixture_model!(&ctx, "llama", LoadOptions::default())?;
    let g = Golden::new(fixture!("llama", "golden.safetensors"), fixture!("llama", "golden.json"))?;
    let ids = g.ids("input_ids");
    let want = g.ids("greedy_tokens");
    let t = ids.len();
    // the first position from 3 on whose token has not come before (a stop token ends at its first occurrence)
    let k = (3..want.len() - 4).find(|&i| !want[..i].contains(&want[i])).ok_or("no fresh token in the goldens")?;
    let prompt = |ids: &[u32]| -> Result<Tensor, String> {
        let mut rec = Recorder::new(&ctx);
        let x = model.embed_prompt(&mut rec, ids, &[]).map_err(e)?;
        rec.submit().map_err(e)?;
        Ok(x)
    };
    for pipelined in [Some(true), Some(false)] {
        let config = |max_new_tokens, stop_tokens| GenerationConfig {
            max_new_tokens,
            stop_tokens,
            pipelined,
            ..Default::default()
        };
        // (config, on_token's answer turns false at this token, expected tokens, stop reason, cache rows)
        let cases = [
            (config(20, vec![want[k]]), usize::MAX, k, StopReason::StopToken, t + k),
            (config(7, vec![]), usize::MAX, 7, StopReason::MaxTokens, t + 6),
            (config(20, vec![]), 4, 4, StopReason::Cancelled, t + 3),
        ];
        for (cfg, until, n, reason, rows) in cases {
            let x = prompt(&ids)?;
            let mut cache = model.lm.new_cache(&ctx).map_err(e)?;
            let mut seen = 0;
            let cancel = CancelToken::default();
            let on_token = |_| {
                seen += 1;
                seen < until
            };
            let out = generate(&ctx, &model, &mut cache, &x, &ids, &cfg, &cancel, on_token).await.map_err(e)?;
            if out.tokens != want[..n] || out.stop != reason || cache.len != rows {
                return Err(format!(
                    "pipelined {pipelined:?}, {reason:?}: got {:?} ({:?}, {} cache rows), want {:?} ({rows} rows)",
                    out.tokens,
                    out.stop,
                    cache.len,
                    &want[..n]
                ));
            }
            if reason == StopReason::StopToken {
                let next = &want[k..k + 1];
                let x = prompt(next)?;
                let cfg = config(3, vec![]);
                let more = generate(&ctx, &model, &mut cache, &x, next, &cfg, &cancel, |_| true).await.map_err(e)?;
                if more.tokens != want[k + 1..k + 4] {
                    return Err(format!("on from the stop: got {:?}, want {:?}", more.tokens, &want[k + 1..k + 4]));
                }
            }
        }
    }
    Ok(())
}

async fn llama_checks(ctx: &Arc<GpuContext>, name: &str, model: &Model, g: &Golden) -> Result<(), String> {
    let ids = g.ids("input_ids");
    let mut rec = Recorder::new(ctx);
    let x = model.embed_prompt(&mut rec, &ids, &[]).map_err(e)?;
    let mut cache = model.lm.new_cache(ctx).map_err(e)?;
    let h0 = model.lm.forward_hidden(&mut rec, &x, &mut cache, Some(1)).map_err(e)?;
    let h = model.lm.forward_hidden(&mut rec, &x, &mut cache, None).map_err(e)?;
    let logits = model.lm.logits(&mut rec, &h, true).map_err(e)?;
    rec.submit().map_err(e)?;
    compare(ctx, &format!("{name} embeddings"), &x, &g.f32("embeddings")?).await?;
    compare(ctx, &format!("{name} layer 0"), &h0, &g.f32("hidden_layer0")?).await?;
    compare(ctx, &format!("{name} logits"), &logits, &g.f32("logits")?).await?;
    let mut rec = Recorder::new(ctx);
    let x = model.embed_prompt(&mut rec, &ids, &[]).map_err(e)?;
    rec.submit().map_err(e)?;
    common::expect_greedy(ctx, name, model, &x, &ids, &g.ids("greedy_tokens")).await?;
    Ok(())
}

async fn idefics3_checks(ctx: &Arc<GpuContext>, name: &str, model: &Model, g: &Golden) -> Result<(), String> {
    let vision = model.vision.as_ref().ok_or("no vision stack")?;
    let px = g.f32("pixel_values")?;
    let s = vision.tower.cfg.image_size;
    let pixels = ctx.upload_f32(&px, &[3, s, s]).map_err(e)?;
    let mut rec = Recorder::new(ctx);
    let emb = vision.tower.embed(&mut rec, &pixels).map_err(e)?;
    let out = vision.tower.forward(&mut rec, &pixels, None).map_err(e)?;
    let post = out.post_norm.clone().ok_or("no post norm")?;
    let conn = vision.connect(&mut rec, &post).map_err(e)?;
    rec.submit().map_err(e)?;
    compare(ctx, &format!("{name} vision embeddings"), &emb, &g.f32("vision_embeddings")?).await?;
    compare(ctx, &format!("{name} vision last_hidden_state"), &post, &g.f32("vision_last_hidden_state")?).await?;
    compare(ctx, &format!("{name} connector"), &conn, &g.f32("connector")?).await?;
    let ids = g.ids("input_ids");
    let mut rec = Recorder::new(ctx);
    let img = vision.encode(&mut rec, &pixels).map_err(e)?;
    let x = model.embed_prompt(&mut rec, &ids, &[img]).map_err(e)?;
    let mut cache = model.lm.new_cache(ctx).map_err(e)?;
    let logits = model.lm.forward(&mut rec, &x, &mut cache, true).map_err(e)?;
    rec.submit().map_err(e)?;
    compare(ctx, &format!("{name} inputs_embeds"), &x, &g.f32("inputs_embeds")?).await?;
    compare(ctx, &format!("{name} logits"), &logits, &g.f32("logits")?).await?;
    common::expect_greedy(ctx, name, model, &x, &ids, &g.ids("greedy_tokens")).await?;
    Ok(())
}

async fn idefics3_safetensors() -> Result<(), String> {
    let ctx = common::ctx().await;
    let model = fixture_model!(&ctx, "idefics3", LoadOptions::default())?;
    let g = Golden::new(fixture!("idefics3", "golden.safetensors"), fixture!("idefics3", "golden.json"))?;
    idefics3_checks(&ctx, "idefics3", &model, &g).await
}

async fn idefics3_gguf() -> Result<(), String> {
    let ctx = common::ctx().await;
    let model = Model::load_gguf(
        &ctx,
        Box::new(fixture!("idefics3_gguf", "model.gguf").to_vec()),
        Some(Box::new(fixture!("idefics3_gguf", "mmproj.gguf").to_vec())),
        LoadOptions::default(),
        256,
    )
    .map_err(e)?;
    // the placeholder GGUF vocabulary has `<image>` at the same id as the safetensors config
    let g = Golden::new(fixture!("idefics3", "golden.safetensors"), fixture!("idefics3", "golden.json"))?;
    idefics3_checks(&ctx, "idefics3 (GGUF)", &model, &g).await
}

/// An image the Idefics3 processor splits (chelsea.png → 2 × 3 tiles of 32² + the global image) through the whole
/// engine: the prompt with the grid's tokens, each tile's features (`Engine::encode_image` records and submits a
/// tile at a time), their order in the prompt, the last logits and 20 greedy tokens, against `transformers`
/// (tests/fixtures/models/idefics3_split, scripts/make_split_image_fixture.py).
/// The tiny Idefics3 engine whose processor splits images (fixture idefics3_split), with a `max_context` context.
fn split_engine(ctx: &Arc<GpuContext>, max_context: usize) -> Result<Engine, String> {
    let f = files(&[
        ("config.json", fixture!("idefics3_engine", "config.json")),
        ("model.safetensors", fixture!("idefics3", "model.safetensors")),
        ("tokenizer.json", fixture!("idefics3_engine", "tokenizer.json")),
        ("tokenizer_config.json", fixture!("idefics3_engine", "tokenizer_config.json")),
        ("preprocessor_config.json", fixture!("idefics3_split", "preprocessor_config.json")),
    ]);
    Engine::load_hf(ctx.clone(), &f, LoadOptions::default(), max_context).map_err(e)
}

async fn idefics3_split_image_engine() -> Result<(), String> {
    let ctx = common::ctx().await;
    let engine = split_engine(&ctx, 2048)?;
    let g = Golden::new(fixture!("idefics3_split", "golden.safetensors"), fixture!("idefics3_split", "golden.json"))?;
    let image = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/images/chelsea.png"));
    let question = g.json["question"].as_str().ok_or("golden.json: no question")?;
    let ids = engine.prompt_ids(&[Engine::user_message(question, 1)], &[image.to_vec()]).map_err(e)?;
    let want_ids = g.ids("input_ids");
    if ids != want_ids {
        return Err(format!("split image prompt ids differ:\n got  {ids:?}\n want {want_ids:?}"));
    }
    let mut stats = ChatStats::default();
    let (feats, frame) = engine.encode_image(image, &mut stats).await.map_err(e)?;
    if frame != (2, 3) || feats.len() != 7 {
        return Err(format!("split image: grid {frame:?} with {} tiles, want (2, 3) with 7", feats.len()));
    }
    let want = g.f32("image_features")?;
    let per = want.len() / feats.len();
    for (i, t) in feats.iter().enumerate() {
        compare(&ctx, &format!("split image tile {i} features"), t, &want[i * per..(i + 1) * per]).await?;
    }
    let mut rec = Recorder::new(&ctx);
    let x = engine.model.embed_prompt(&mut rec, &ids, &feats).map_err(e)?;
    let mut cache = engine.model.lm.new_cache(&ctx).map_err(e)?;
    let logits = engine.model.lm.forward(&mut rec, &x, &mut cache, false).map_err(e)?;
    rec.submit().map_err(e)?;
    compare(&ctx, "split image last logits", &logits, &g.f32("last_logits")?).await?;
    common::expect_greedy(&ctx, "split image", &engine.model, &x, &ids, &g.ids("greedy_tokens")).await?;
    Ok(())
}

/// A chat whose images do not fit the context fails before the vision tower runs (no GPU submission), and the
/// image cache keeps the most recently used images within its budget.
async fn engine_image_budget() -> Result<(), String> {
    let ctx = common::ctx().await;
    let chelsea = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/images/chelsea.png")).to_vec();
    // 7 tiles of 16 image tokens: 149 prompt tokens (idefics3_split's golden) in a 128-token context
    let engine = split_engine(&ctx, 128)?;
    let req = ChatRequest {
        messages: vec![Engine::user_message("Describe the image.", 1)],
        images: vec![chelsea.clone()],
        generation: GenerationConfig { max_new_tokens: 4, ..Default::default() },
    };
    let before = ctx.submissions();
    match engine.chat(&req, &CancelToken::default(), |_| {}).await {
        Err(webvlm::Error::ContextOverflow { tokens: 149, context: 128 }) => {}
        other => return Err(format!("expected a context overflow, got {:?}", other.map(|r| r.text))),
    }
    if ctx.submissions() != before {
        return Err(format!("{} submissions for a request refused by its length", ctx.submissions() - before));
    }
    // three images (crops of chelsea, each upscaled and split into the same tiles) in a budget of two
    let engine = split_engine(&ctx, 2048)?;
    let crop = |x: u32| {
        let img = image::load_from_memory(&chelsea).unwrap().crop_imm(x, 0, 32, 32);
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let images = [crop(0), crop(100), crop(200)];
    let mut stats = ChatStats::default();
    for img in &images {
        let (feats, _) = engine.encode_image(img, &mut stats).await.map_err(e)?;
        engine.set_image_cache_bytes(2 * feats.iter().map(|t| t.bytes()).sum::<u64>());
    }
    if stats.images_from_cache != 0 {
        return Err(format!("{} of 3 different images came from the cache", stats.images_from_cache));
    }
    for (i, want_hit) in [(2, true), (1, true), (0, false)] {
        let mut s = ChatStats::default();
        engine.encode_image(&images[i], &mut s).await.map_err(e)?;
        if (s.images_from_cache == 1) != want_hit {
            return Err(format!("image {i}: from cache {}, want {want_hit}", s.images_from_cache));
        }
    }
    Ok(())
}

async fn llava_siglip() -> Result<(), String> {
    let ctx = common::ctx().await;
    let model = fixture_model!(&ctx, "llava_siglip", LoadOptions::default())?;
    let g = Golden::new(fixture!("llava_siglip", "golden.safetensors"), fixture!("llava_siglip", "golden.json"))?;
    let vision = model.vision.as_ref().ok_or("no vision stack")?;
    let s = vision.tower.cfg.image_size;
    let pixels = ctx.upload_f32(&g.f32("pixel_values")?, &[3, s, s]).map_err(e)?;
    let mut rec = Recorder::new(&ctx);
    let out = vision.tower.forward(&mut rec, &pixels, None).map_err(e)?;
    let img = vision.encode(&mut rec, &pixels).map_err(e)?;
    let ids = g.ids("input_ids");
    let x = model.embed_prompt(&mut rec, &ids, &[img.clone()]).map_err(e)?;
    let mut cache = model.lm.new_cache(&ctx).map_err(e)?;
    let logits = model.lm.forward(&mut rec, &x, &mut cache, true).map_err(e)?;
    rec.submit().map_err(e)?;
    compare(&ctx, "llava vision_feature (pre post-LN)", &out.last_layer, &g.f32("vision_feature")?).await?;
    compare(&ctx, "llava projector", &img, &g.f32("projector")?).await?;
    compare(&ctx, "llava logits", &logits, &g.f32("logits")?).await?;
    common::expect_greedy(&ctx, "llava", &model, &x, &ids, &g.ids("greedy_tokens")).await?;
    Ok(())
}

/// Quantized at load (Q8_0) or rounded to bf16 (the dtype a bf16 checkpoint keeps on adapters without
/// shader-f16): logits stay close to the f32 goldens.
async fn llama_quantized_at_load() -> Result<(), String> {
    let ctx = common::ctx().await;
    let g = Golden::new(fixture!("llama", "golden.safetensors"), fixture!("llama", "golden.json"))?;
    for dtype in [webvlm::gpu::DType::Q8_0, webvlm::gpu::DType::BF16] {
        let opts = LoadOptions { dtype: Some(dtype), ..Default::default() };
        let model = fixture_model!(&ctx, "llama", opts)?;
        let ids = g.ids("input_ids");
        let mut rec = Recorder::new(&ctx);
        let x = model.embed_prompt(&mut rec, &ids, &[]).map_err(e)?;
        let mut cache = model.lm.new_cache(&ctx).map_err(e)?;
        let logits = model.lm.forward(&mut rec, &x, &mut cache, true).map_err(e)?;
        rec.submit().map_err(e)?;
        let got = ctx.read_f32(&logits).await.map_err(e)?;
        let want = g.f32("logits")?;
        let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        // Q8_0 keeps ~8 bits per weight (relative error ≤ 1/254 per weight), bf16 8 significant bits (≤ 2^-9);
        // through 2 layers of this random model (q/k scaled ×3 to sharpen attention) that compounds to a few
        // percent of the logit range at worst. The assertion is a loose bound on the worst logit plus a tight one
        // on the mean, so a wrong block decode or unpack (which gives errors of the order of the logits
        // themselves) fails while rounding noise passes.
        let d = check_close(&format!("llama {dtype} logits"), &got, &want, 0.1 * max, 0.0)?;
        println!("{dtype} logits: max abs err {:.3e}, mean {:.3e} of max {max:.3}", d.max_abs, d.mean_abs);
        if d.mean_abs > 0.01 * max {
            return Err(format!("{dtype} logits: mean abs err {:.3e} > 1% of max {max:.3}", d.mean_abs));
        }
    }
    Ok(())
}

mod run {
    crate::gpu_tests!(
        llama_tied,
        llama_separate_projections,
        llama_untied_llama3_rope,
        llama_repetition_penalty,
        llama_stops_leave_the_cache_whole,
        idefics3_safetensors,
        idefics3_gguf,
        idefics3_split_image_engine,
        engine_image_budget,
        llava_siglip,
        llama_quantized_at_load
    );
}
