//! The generation loop — one implementation for native and wasm (it is `async` and awaits only the GPU
//! readback of the sampled token id).
//!
//! Prefill runs the prompt embeddings (text + image features) through the decoder in one submission; each decode
//! step is one submission too (embed the last token → decoder → LM head → repetition penalty → sample), and reads
//! back one u32: the step embeds the id where the last step left it on the GPU, and the penalty's history (the
//! prompt's ids, then each picked one) grows by a buffer copy in the same submission, so nothing is uploaded per
//! token. Sampling is greedy, or temperature / top-k / top-p with a seeded RNG, with Hugging Face's repetition
//! penalty (over the prompt and the generated ids; tests/models.rs checks it against `generate`); stops on stop
//! tokens or `max_new_tokens`; streams text at UTF-8-safe boundaries; can be cancelled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Recorder, Tensor};
use crate::models::Model;
use crate::nn::KvCache;
use crate::ops::sample;
use crate::testing::Rng;

/// Sampling and stopping settings.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: u32,
    /// 1 = off.
    pub top_p: f32,
    /// 1 = off.
    pub repetition_penalty: f32,
    pub seed: u64,
    /// Tokens that end generation (not emitted).
    pub stop_tokens: Vec<u32>,
    /// Submit each decode step before reading the previous step's token id back (the step embeds that id from
    /// the GPU buffer the sampler wrote), so the GPU runs it while the host waits for the readback and records;
    /// a step that turns out not to be needed is discarded. None: on GPUs, not on CPU adapters
    /// (`Caps::cpu_adapter`), whose threads the host's recording would compete with (lavapipe decode 22–24 → 20
    /// tok/s pipelined; H200 186–196 → 389–395 tok/s).
    pub pipelined: Option<bool>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            stop_tokens: vec![],
            pipelined: None,
        }
    }
}

/// A cancellation flag shared with whoever may cancel (a UI button, an `AbortSignal`, a timeout).
#[derive(Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    StopToken,
    MaxTokens,
    ContextFull,
    Cancelled,
}

/// Timings and counts of one generation.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// Submissions per decoded token (1 by design).
    pub submissions_per_token: f64,
    pub dispatches_per_token: f64,
}

impl GenerationStats {
    pub fn prefill_tok_s(&self) -> f64 {
        if self.prefill_ms > 0.0 {
            self.prompt_tokens as f64 / (self.prefill_ms / 1e3)
        } else {
            0.0
        }
    }
    pub fn decode_tok_s(&self) -> f64 {
        // the first token comes from prefill; decode steps = generated - 1
        let steps = self.generated_tokens.saturating_sub(1);
        if self.decode_ms > 0.0 {
            steps as f64 / (self.decode_ms / 1e3)
        } else {
            0.0
        }
    }
}

pub struct GenerationOutput {
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    pub stats: GenerationStats,
}

/// Wall clock in milliseconds on both targets.
pub fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::time::{SystemTime, UNIX_EPOCH};
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
    }
}

/// The ids the repetition penalty sees, on the GPU: the prompt's (as Hugging Face's `input_ids`, image
/// placeholders included), then each picked id, copied in by the step that picked it (no upload per step).
struct PenaltyHistory {
    ids: Tensor,
    len: usize,
}

impl PenaltyHistory {
    /// Room for the prompt and `picks` picked ids.
    fn new(ctx: &GpuContext, prompt_ids: &[u32], picks: usize) -> Result<Self> {
        let cap = prompt_ids.len() + picks;
        let ids = ctx.empty(&[cap], crate::gpu::DType::U32)?; // read only up to `len`
        if !prompt_ids.is_empty() {
            ctx.write_words(&ids, 0, prompt_ids)?;
        }
        Ok(Self { ids, len: prompt_ids.len() })
    }

    /// Appends the picked id (U32 `[1]` on the GPU) in `rec`'s submission.
    fn push(&mut self, rec: &mut Recorder, id: &Tensor) -> Result<()> {
        rec.copy(id, 0, &self.ids, self.len as u64 * 4, 4)?;
        self.len += 1;
        Ok(())
    }
}

/// Picks the next token from logits [1, V] on the GPU; returns the U32 [1] tensor to read back.
fn pick(
    rec: &mut Recorder,
    logits: &Tensor,
    cfg: &GenerationConfig,
    history: Option<&PenaltyHistory>,
    rng: &mut Rng,
) -> Result<Tensor> {
    let mut logits = logits.clone();
    if let Some(h) = history.filter(|h| h.len > 0) {
        logits = sample::repetition_penalty(rec, &logits, &h.ids, h.len, cfg.repetition_penalty)?;
    }
    if cfg.temperature <= 0.0 {
        sample::argmax(rec, &logits)
    } else {
        let p = sample::SampleParams {
            temperature: cfg.temperature,
            top_k: cfg.top_k,
            top_p: cfg.top_p,
            uniform: rng.f32(),
        };
        sample::sample(rec, &logits, &p)
    }
}

async fn read_id(ctx: &GpuContext, staging: crate::gpu::Staging) -> Result<u32> {
    let b = ctx.read_staging(staging).await?;
    b.get(..4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .ok_or_else(|| Error::Readback(format!("token id readback returned {} bytes", b.len())))
}

/// Records and submits one decode step: embeds the id the last step picked (`id_t`, still on the GPU), runs the
/// decoder over it, picks the next id into `id_t`; returns the readback of that id and the step's dispatches.
fn decode_step(
    ctx: &GpuContext,
    model: &Model,
    cache: &mut KvCache,
    cfg: &GenerationConfig,
    history: &mut Option<PenaltyHistory>,
    rng: &mut Rng,
    id_t: &mut Tensor,
) -> Result<(crate::gpu::Staging, usize)> {
    let mut rec = Recorder::new(ctx);
    let x = model.lm.embed(&mut rec, id_t)?;
    let logits = model.lm.forward(&mut rec, &x, cache, false)?;
    *id_t = pick(&mut rec, &logits, cfg, history.as_ref(), rng)?;
    if let Some(h) = history.as_mut() {
        h.push(&mut rec, id_t)?;
    }
    let n = rec.len();
    // the step and the copy of its token id go in one submission
    Ok((rec.submit_reading(id_t, 4)?, n))
}

/// Generates from prompt embeddings `x` [T, D] (see [`Model::embed_prompt`]) appended to `cache`; `prompt_ids`
/// are the ids `x` was embedded from (image placeholders included), which only the repetition penalty reads —
/// as Hugging Face's does, it penalizes the prompt's ids and the generated ones.
/// `on_token(id)` is called for every generated token (return `false` to stop).
#[allow(clippy::too_many_arguments)]
pub async fn generate(
    ctx: &GpuContext,
    model: &Model,
    cache: &mut KvCache,
    x: &Tensor,
    prompt_ids: &[u32],
    cfg: &GenerationConfig,
    cancel: &CancelToken,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<GenerationOutput> {
    let mut stats = GenerationStats { prompt_tokens: x.rows(), ..Default::default() };
    if cache.len + x.rows() > cache.max_len {
        return Err(Error::ContextOverflow { tokens: cache.len + x.rows(), context: cache.max_len });
    }
    if cfg.repetition_penalty.is_nan() || cfg.repetition_penalty <= 0.0 {
        return Err(Error::Config(format!("repetition penalty must be > 0, got {}", cfg.repetition_penalty)));
    }
    let mut history = match cfg.repetition_penalty != 1.0 {
        // one pick after the prefill, then one per decode step, each of which needs a free cache row
        true => {
            let picks = cfg.max_new_tokens.min(1 + cache.max_len - cache.len - x.rows());
            Some(PenaltyHistory::new(ctx, prompt_ids, picks.max(1))?)
        }
        false => None,
    };
    let mut rng = Rng::new(cfg.seed);
    let mut tokens = Vec::new();
    let t0 = now_ms();
    let mut rec = Recorder::new(ctx);
    let logits = model.lm.forward(&mut rec, x, cache, false)?;
    let mut id_t = pick(&mut rec, &logits, cfg, history.as_ref(), &mut rng)?;
    if let Some(h) = history.as_mut() {
        h.push(&mut rec, &id_t)?;
    }
    // The step whose token id is not read yet: its readback, and its dispatches.
    let mut pending = (rec.submit_reading(&id_t, 4)?, 0usize);
    let pipelined = cfg.pipelined.unwrap_or(!ctx.caps.cpu_adapter);
    let mut t1 = None;
    let mut dispatches = 0usize;
    let submitted_before = ctx.submissions();
    // where the step read ends generation, the step submitted after it is discarded: its cache row is given back,
    // as if it had not run
    let discard = |cache: &mut KvCache, next: &Option<_>| {
        if next.is_some() {
            cache.len -= 1;
        }
    };
    let stop = loop {
        // Pipelined: the next step is submitted before this one's id is read back, where that id will need a
        // successor — if it turns out to be a stop token (or the caller stops), the step is discarded and its
        // cache row given back.
        let mut next = None;
        if pipelined && tokens.len() + 1 < cfg.max_new_tokens && cache.len < cache.max_len {
            next = Some(decode_step(ctx, model, cache, cfg, &mut history, &mut rng, &mut id_t)?);
        }
        let id = match read_id(ctx, pending.0).await {
            Ok(id) => id,
            Err(err) => {
                discard(cache, &next);
                return Err(err);
            }
        };
        dispatches += pending.1;
        // (pipelined, the prefill's time includes recording the first decode step: the GPU ran the prefill then)
        if t1.is_none() {
            stats.prefill_ms = now_ms() - t0;
            t1 = Some(now_ms());
        }
        let stop = if cancel.is_cancelled() {
            Some(StopReason::Cancelled)
        } else if cfg.stop_tokens.contains(&id) {
            Some(StopReason::StopToken)
        } else {
            tokens.push(id);
            if !on_token(id) {
                Some(StopReason::Cancelled)
            } else if tokens.len() >= cfg.max_new_tokens {
                Some(StopReason::MaxTokens)
            } else {
                None
            }
        };
        if let Some(stop) = stop {
            discard(cache, &next);
            break stop;
        }
        if !pipelined && cache.len < cache.max_len {
            next = Some(decode_step(ctx, model, cache, cfg, &mut history, &mut rng, &mut id_t)?);
        }
        match next {
            Some(n) => pending = n,
            None => break StopReason::ContextFull,
        }
    };
    let t1 = t1.unwrap_or(t0);
    stats.decode_ms = now_ms() - t1;
    stats.generated_tokens = tokens.len();
    let steps = tokens.len().saturating_sub(1).max(1);
    // counted by the context: any submission a decode step makes (kernels, readbacks) shows here
    stats.submissions_per_token = (ctx.submissions() - submitted_before) as f64 / steps as f64;
    stats.dispatches_per_token = dispatches as f64 / steps as f64;
    if stop == StopReason::Cancelled && cancel.is_cancelled() && tokens.is_empty() {
        return Err(Error::Cancelled);
    }
    Ok(GenerationOutput { tokens, stop, stats })
}
