//! Llama-family decoder (Llama 2/3, SmolLM2, TinyLlama): RMSNorm, RoPE, grouped-query attention over a KV cache,
//! SwiGLU MLP, tied or untied LM head.
//! Reference: transformers `models/llama/modeling_llama.py` (`LlamaDecoderLayer`, `LlamaAttention`, `LlamaMLP`).

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor};
use crate::nn::{KvCache, Linear, RmsNorm, VarBuilder};
use crate::ops::matmul::{self, Fused};
use crate::ops::{attention, elementwise, embedding, rope};

fn default_theta() -> f64 {
    10000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    2048
}

/// `rope_scaling` / transformers-5 `rope_parameters`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RopeParameters {
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

/// Hugging Face `LlamaConfig` (the fields the forward pass needs).
#[derive(Clone, Debug, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// Weights in GGUF (llama.cpp) rotary order: Q/K rows of each head interleaved, so RoPE pairs (2i, 2i+1).
    #[serde(skip)]
    pub interleaved_rope: bool,
}

impl LlamaConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub fn validate(&self) -> Result<()> {
        let (h, kv) = (self.num_attention_heads, self.kv_heads());
        if h == 0 || kv == 0 || h % kv != 0 {
            return Err(Error::Config(format!(
                "num_attention_heads {h} must be a multiple of num_key_value_heads {kv}"
            )));
        }
        if self.head_dim() == 0 || self.head_dim() % 4 != 0 || self.head_dim() > attention::MAX_HEAD_DIM {
            return Err(Error::Config(format!(
                "head_dim {} unsupported (multiple of 4, ≤ {})",
                self.head_dim(),
                attention::MAX_HEAD_DIM
            )));
        }
        if self.hidden_act != "silu" {
            return Err(Error::Config(format!("Llama hidden_act `{}` unsupported (silu)", self.hidden_act)));
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 || self.intermediate_size == 0 {
            return Err(Error::Config(
                "vocab_size, hidden_size, intermediate_size and num_hidden_layers must be positive".into(),
            ));
        }
        super::config_product("num_attention_heads × head_dim", &[h, self.head_dim()])?;
        super::config_product("vocab_size × hidden_size", &[self.vocab_size, self.hidden_size])?;
        Ok(())
    }

    /// Inverse RoPE frequencies with the configured scaling (default, linear, llama3).
    /// Port of transformers `modeling_rope_utils.py` (`_compute_default_parameters`, `_compute_llama3_parameters`).
    pub fn inv_freq(&self) -> Result<Vec<f64>> {
        let params = self.rope_parameters.clone().or_else(|| self.rope_scaling.clone()).unwrap_or_default();
        let theta = params.rope_theta.unwrap_or(self.rope_theta);
        positive("rope_theta", theta)?;
        let mut f = rope::inv_freq(theta, self.head_dim());
        match params.rope_type.as_deref().unwrap_or("default") {
            "default" => {}
            "linear" => {
                let factor = params.factor.unwrap_or(1.0);
                positive("factor", factor)?;
                f.iter_mut().for_each(|x| *x /= factor);
            }
            "llama3" => {
                let factor = params.factor.unwrap_or(8.0);
                let lo = params.low_freq_factor.unwrap_or(1.0);
                let hi = params.high_freq_factor.unwrap_or(4.0);
                let old = params.original_max_position_embeddings.unwrap_or(8192) as f64;
                positive("factor", factor)?;
                positive("low_freq_factor", lo)?;
                positive("original_max_position_embeddings", old)?;
                if !(hi > lo && hi.is_finite()) {
                    return Err(Error::Config(format!("rope high_freq_factor {hi} must exceed low_freq_factor {lo}")));
                }
                let (lo_wl, hi_wl) = (old / lo, old / hi);
                for x in f.iter_mut() {
                    let wl = 2.0 * std::f64::consts::PI / *x;
                    if wl < hi_wl {
                        // high frequency: unchanged
                    } else if wl > lo_wl {
                        *x /= factor;
                    } else {
                        let smooth = (old / wl - lo) / (hi - lo);
                        *x = (1.0 - smooth) * *x / factor + smooth * *x;
                    }
                }
            }
            other => return Err(Error::Config(format!("rope type `{other}` unsupported (default, linear, llama3)"))),
        }
        Ok(f)
    }

    /// Token ids that end generation, from `eos_token_id` (a number or a list).
    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_u64().map(|x| x as u32)).collect(),
            _ => vec![],
        }
    }
}

struct Layer {
    input_norm: RmsNorm,
    qkv: Qkv,
    o: Linear,
    post_norm: RmsNorm,
    gate_up: GateUp,
    down: Linear,
}

/// The attention's input projections: one stacked `[q; k; v]` weight (one GEMV/GEMM, then one kernel that rotates
/// q and k and writes k and v into the cache) when their weights share a GPU dtype, else three.
enum Qkv {
    Stacked(Linear),
    Split { q: Linear, k: Linear, v: Linear },
}

/// The MLP's gate and up projections: stacked `[gate; up]` (in decode one GEMV computes both and the SwiGLU), or
/// apart when their dtypes differ.
enum GateUp {
    Stacked(Linear),
    Split { gate: Linear, up: Linear },
}

impl Qkv {
    fn load(vb: &VarBuilder, d: usize, outs: [usize; 3], bias: bool) -> Result<Self> {
        let names = ["q_proj", "k_proj", "v_proj"];
        if !vb.options().separate_projections {
            if let Some(l) = Linear::load_stacked(vb, &names, d, &outs, bias)? {
                return Ok(Self::Stacked(l));
            }
        }
        Ok(Self::Split {
            q: Linear::load(vb, names[0], d, outs[0], bias)?,
            k: Linear::load(vb, names[1], d, outs[1], bias)?,
            v: Linear::load(vb, names[2], d, outs[2], bias)?,
        })
    }

    fn linears(&self) -> Vec<&Linear> {
        match self {
            Self::Stacked(l) => vec![l],
            Self::Split { q, k, v } => vec![q, k, v],
        }
    }
}

impl GateUp {
    fn load(vb: &VarBuilder, d: usize, ff: usize, bias: bool) -> Result<Self> {
        let names = ["gate_proj", "up_proj"];
        if !vb.options().separate_projections {
            if let Some(l) = Linear::load_stacked(vb, &names, d, &[ff, ff], bias)? {
                return Ok(Self::Stacked(l));
            }
        }
        Ok(Self::Split { gate: Linear::load(vb, names[0], d, ff, bias)?, up: Linear::load(vb, names[1], d, ff, bias)? })
    }

    /// `silu(gate(h)) * up(h)` for `h = norm(x)`.
    fn forward(&self, rec: &mut Recorder, x: &Tensor, norm: &RmsNorm) -> Result<Tensor> {
        match self {
            Self::Stacked(l) => {
                matmul::linear_swiglu_with(rec, x, &l.w, l.b.as_ref(), Some(norm.pre()), matmul::Path::Auto)
            }
            Self::Split { gate, up } => {
                let h = &norm.forward(rec, x)?;
                let g = gate.forward(rec, h)?;
                let u = up.forward(rec, h)?;
                elementwise::binary(rec, elementwise::Binary::SwiGlu, &g, &u)
            }
        }
    }

    fn linears(&self) -> Vec<&Linear> {
        match self {
            Self::Stacked(l) => vec![l],
            Self::Split { gate, up } => vec![gate, up],
        }
    }
}

/// The decoder. Weight names are Hugging Face's under a prefix (`model.` for LlamaForCausalLM,
/// `model.text_model.` inside Idefics3, `language_model.model.` inside LLaVA).
pub struct Llama {
    pub cfg: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    /// `None` when tied to the embedding table.
    lm_head: Option<Tensor>,
    rope_table: Tensor,
    pub max_context: usize,
}

/// A rope scaling parameter that must be a finite positive number.
fn positive(name: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::Config(format!("rope {name} {v} must be a finite positive number")))
    }
}

impl Llama {
    /// `vb` is scoped at the decoder (`model`), `head_vb` at the LM head's parent (the root for LlamaForCausalLM).
    pub fn load(cfg: LlamaConfig, vb: &VarBuilder, head_vb: &VarBuilder, max_context: usize) -> Result<Self> {
        cfg.validate()?;
        let (d, hd) = (cfg.hidden_size, cfg.head_dim());
        let (nh, nkv, ff) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.intermediate_size);
        let eps = cfg.rms_norm_eps as f32;
        let embed = vb.matrix("embed_tokens.weight", [cfg.vocab_size, d])?;
        // grown as layers load (a hostile config's layer count would size an allocation before the first missing
        // tensor stops the loop with a typed error)
        let mut layers = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp("layers").pp(i);
            let a = l.pp("self_attn");
            let m = l.pp("mlp");
            layers.push(Layer {
                input_norm: RmsNorm::load(&l, "input_layernorm", d, eps)?,
                qkv: Qkv::load(&a, d, [nh * hd, nkv * hd, nkv * hd], cfg.attention_bias)?,
                o: Linear::load(&a, "o_proj", nh * hd, d, cfg.attention_bias)?,
                post_norm: RmsNorm::load(&l, "post_attention_layernorm", d, eps)?,
                gate_up: GateUp::load(&m, d, ff, cfg.mlp_bias)?,
                down: Linear::load(&m, "down_proj", ff, d, cfg.mlp_bias)?,
            });
        }
        let norm = RmsNorm::load(vb, "norm", d, eps)?;
        let lm_head = if cfg.tie_word_embeddings && !head_vb.contains("lm_head.weight") {
            None
        } else {
            Some(head_vb.matrix("lm_head.weight", [cfg.vocab_size, d])?)
        };
        let max_context = max_context.max(1);
        let rope_table = rope::cos_sin_table(vb.ctx(), &cfg.inv_freq()?, max_context)?;
        Ok(Self { cfg, embed, layers, norm, lm_head, rope_table, max_context })
    }

    /// A KV cache for `max_context` positions on `ctx` (the context the model was loaded on).
    pub fn new_cache(&self, ctx: &crate::gpu::GpuContext) -> Result<KvCache> {
        KvCache::new(ctx, self.layers.len(), self.max_context, self.cfg.kv_heads(), self.cfg.head_dim())
    }

    /// Token embeddings [T, D] for ids (U32 [T]).
    pub fn embed(&self, rec: &mut Recorder, ids: &Tensor) -> Result<Tensor> {
        embedding::embedding(rec, &self.embed, ids)
    }

    /// Runs the decoder over `x` [T, D] at positions `cache.len..`, appends to the cache, and returns the
    /// logits [T', V] of the last position (T' = 1) or of all positions (`all_logits`).
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, cache: &mut KvCache, all_logits: bool) -> Result<Tensor> {
        let h = self.forward_hidden(rec, x, cache, None)?;
        self.logits(rec, &h, all_logits)
    }

    /// The decoder layers (without the final norm); `stop_after` ends after that many layers (for tests).
    pub fn forward_hidden(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        cache: &mut KvCache,
        stop_after: Option<usize>,
    ) -> Result<Tensor> {
        let t = x.rows();
        let pos0 = cache.len;
        if pos0 + t > cache.max_len {
            return Err(Error::ContextOverflow { tokens: pos0 + t, context: cache.max_len });
        }
        let (nh, nkv, hd) = (self.cfg.num_attention_heads, self.cfg.kv_heads(), self.cfg.head_dim());
        let layout =
            if self.cfg.interleaved_rope { rope::RopeLayout::Interleaved } else { rope::RopeLayout::RotateHalf };
        let scale = 1.0 / (hd as f32).sqrt();
        // x is the residual stream; the norms are fused into the products after them (the GEMV of one token
        // normalizes x as it reads it), the residual adds into the products before them
        let mut x = x.clone();
        for (i, l) in self.layers.iter().enumerate().take(stop_after.unwrap_or(usize::MAX)) {
            let pre = Fused { pre_norm: Some(l.input_norm.pre()), ..Fused::default() };
            let q = match &l.qkv {
                // one token: the rotation and the cache write in the projection's GEMV (no qkv tensor)
                Qkv::Stacked(w) if t == 1 && hd % 4 == 0 && matmul::gemv_supports(w.w.dtype, x.cols()) => {
                    let r = matmul::RopeQkv {
                        table: &self.rope_table,
                        pos: pos0,
                        layout,
                        heads: nh,
                        k_cache: &cache.k[i],
                        v_cache: &cache.v[i],
                    };
                    matmul::linear_rope_qkv(rec, &x, &w.w, w.b.as_ref(), &r, pre.pre_norm, matmul::Path::Auto)?
                        .reshape(&[t, nh, hd])?
                }
                Qkv::Stacked(w) => {
                    let qkv = w.forward_fused(rec, &x, pre)?;
                    rope::rope_qkv(rec, &qkv, &self.rope_table, pos0, layout, nh, &cache.k[i], &cache.v[i])?
                }
                Qkv::Split { q, k, v } => {
                    let h = l.input_norm.forward(rec, &x)?;
                    let q = q.forward(rec, &h)?.reshape(&[t, nh, hd])?;
                    let k = k.forward(rec, &h)?.reshape(&[t, nkv, hd])?;
                    let v = v.forward(rec, &h)?.reshape(&[t, nkv, hd])?;
                    let q = rope::rope(rec, &q, &self.rope_table, pos0, layout)?;
                    let k = rope::rope(rec, &k, &self.rope_table, pos0, layout)?;
                    attention::write_kv(rec, &cache.k[i], &k, pos0)?;
                    attention::write_kv(rec, &cache.v[i], &v, pos0)?;
                    q
                }
            };
            let p = attention::AttnParams { causal: true, scale, kv_len: pos0 + t, q_pos0: pos0 };
            let a = attention::attention(rec, &q, &cache.k[i], &cache.v[i], &p)?.reshape(&[t, nh * hd])?;
            let s = l.o.forward_fused(rec, &a, Fused { residual: Some(&x), ..Fused::default() })?;
            let m = l.gate_up.forward(rec, &s, &l.post_norm)?;
            x = l.down.forward_fused(rec, &m, Fused { residual: Some(&s), ..Fused::default() })?;
        }
        if stop_after.is_none() {
            cache.len = pos0 + t;
        }
        Ok(x)
    }

    /// Final norm + LM head, on the last row only unless `all`.
    pub fn logits(&self, rec: &mut Recorder, h: &Tensor, all: bool) -> Result<Tensor> {
        let h = if all || h.rows() == 1 { h.clone() } else { last_row(rec, h)? };
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let fused = Fused { pre_norm: Some(self.norm.pre()), ..Fused::default() };
        matmul::linear_fused(rec, &h, head, None, fused, matmul::Path::Auto)
    }

    /// The final RMSNorm alone (tests compare it with the reference's last hidden state).
    pub fn final_norm(&self, rec: &mut Recorder, h: &Tensor) -> Result<Tensor> {
        self.norm.forward(rec, h)
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        let mut b = self.embed.bytes() + self.norm.w.bytes() + self.lm_head.as_ref().map_or(0, |t| t.bytes());
        for l in &self.layers {
            for lin in l.qkv.linears().into_iter().chain(l.gate_up.linears()).chain([&l.o, &l.down]) {
                b += lin.bytes();
            }
            b += l.input_norm.w.bytes() + l.post_norm.w.bytes();
        }
        b
    }
}

/// The last row of x [T, D] as [1, D].
pub fn last_row(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    let (t, d) = (x.rows(), x.cols());
    let out = rec.empty(&[1, d], x.dtype)?;
    let row = (d * 4) as u64;
    rec.copy(x, (t as u64 - 1) * row, &out, 0, row)?;
    Ok(out)
}
