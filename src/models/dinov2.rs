//! DINOv2 vision transformer (Hugging Face `Dinov2Model`): patch embedding (a strided Conv2d = unfold + GEMM), a
//! class token prepended, learned position embeddings for the pretraining grid + CLS (bicubically interpolated on
//! the CPU for other image sizes, cached per grid), pre-norm encoder layers with layer scale and a GELU MLP, and a
//! final LayerNorm.
//! Reference: transformers `models/dinov2/modeling_dinov2.py` (`Dinov2Embeddings.interpolate_pos_encoding`,
//! `Dinov2Layer`, `Dinov2LayerScale`, `Dinov2Model.forward`), transformers 5.24.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::{DType, Recorder, Tensor};
use crate::nn::{vit_self_attention, Activation, LayerNorm, Linear, Mlp, VarBuilder};
use crate::ops::{attention, elementwise, vision};

use super::siglip::{VisionConfig, VisionOutput};

fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "gelu".into()
}
fn default_channels() -> usize {
    3
}
fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_true() -> bool {
    true
}
fn default_image() -> usize {
    224
}
fn default_patch() -> usize {
    14
}

/// `Dinov2Config` (the fields the forward pass needs).
#[derive(Clone, Debug, Deserialize)]
pub struct Dinov2Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "default_image")]
    pub image_size: usize,
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    #[serde(default)]
    pub use_swiglu_ffn: bool,
    #[serde(default)]
    pub num_register_tokens: usize,
}

impl Dinov2Config {
    pub fn intermediate_size(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }

    /// The generic view (`image_size` = the pretraining size until [`Dinov2::set_image_size`]).
    pub fn vision_config(&self) -> VisionConfig {
        VisionConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size(),
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            image_size: self.image_size,
            patch_size: self.patch_size,
            num_channels: self.num_channels,
            layer_norm_eps: self.layer_norm_eps,
            hidden_act: self.hidden_act.clone(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.use_swiglu_ffn {
            return Err(Error::UnsupportedModel("DINOv2 with use_swiglu_ffn (the giant variant)".into()));
        }
        if self.num_register_tokens != 0 {
            return Err(Error::UnsupportedModel("DINOv2 with register tokens".into()));
        }
        let v = self.vision_config();
        v.validate()
    }
}

struct Layer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ls1: Tensor,
    norm2: LayerNorm,
    mlp: Mlp,
    ls2: Tensor,
}

/// A loaded DINOv2 tower.
pub struct Dinov2 {
    pub cfg: Dinov2Config,
    patch_w: Tensor,
    patch_b: Tensor,
    /// `cls_token + position_embeddings[0]`, [1, D] (the class row of the embeddings; never interpolated).
    cls_row: Tensor,
    /// Patch position embeddings of the pretraining grid, [g0·g0, D], row-major (CPU copy for interpolation).
    pos_cpu: Vec<f32>,
    grid0: usize,
    /// Patch position embeddings on the GPU per patch grid (rows, cols).
    pos_cache: Mutex<HashMap<(usize, usize), Tensor>>,
    layers: Vec<Layer>,
    layernorm: LayerNorm,
}

impl Dinov2 {
    /// `vb` scoped at the `Dinov2Model` (`embeddings.*`, `encoder.layer.*`, `layernorm.*`).
    pub fn load(cfg: Dinov2Config, vb: &VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (d, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);
        let eps = cfg.layer_norm_eps as f32;
        let act = Activation::from_hf(&cfg.hidden_act)?;
        let e = vb.pp("embeddings");
        let proj = e.pp("patch_embeddings.projection");
        let patch_w = proj.matrix_as("weight", &[d, c, p, p], [d, c * p * p])?;
        let patch_b = proj.f32("bias", &[d])?;
        let cls = e.cpu_f32("cls_token", &[1, 1, d])?;
        let grid0 = cfg.image_size / p;
        let pos = e.cpu_f32("position_embeddings", &[1, grid0 * grid0 + 1, d])?;
        let cls_row: Vec<f32> = cls.iter().zip(&pos[..d]).map(|(a, b)| a + b).collect();
        let cls_row = vb.ctx().upload_f32(&cls_row, &[1, d])?;
        let pos_cpu = pos[d..].to_vec();
        let inter = cfg.intermediate_size();
        // grown as layers load (a hostile config's layer count would size an allocation before the first missing
        // tensor stops the loop with a typed error)
        let mut layers = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp("encoder.layer").pp(i);
            let m = l.pp("mlp");
            // checkpoint names (facebook/dinov2-*, transformers' save_pretrained) or transformers 5 in-memory names
            let (a, o, [qn, kn, vn, on]) = if l.contains("attention.q_proj.weight") {
                (l.pp("attention"), l.pp("attention"), ["q_proj", "k_proj", "v_proj", "o_proj"])
            } else {
                (l.pp("attention.attention"), l.pp("attention.output"), ["query", "key", "value", "dense"])
            };
            layers.push(Layer {
                norm1: LayerNorm::load(&l, "norm1", d, eps)?,
                q: Linear::load(&a, qn, d, d, cfg.qkv_bias)?,
                k: Linear::load(&a, kn, d, d, cfg.qkv_bias)?,
                v: Linear::load(&a, vn, d, d, cfg.qkv_bias)?,
                out: Linear::load(&o, on, d, d, true)?,
                ls1: l.pp("layer_scale1").f32("lambda1", &[d])?,
                norm2: LayerNorm::load(&l, "norm2", d, eps)?,
                mlp: Mlp {
                    fc1: Linear::load(&m, "fc1", d, inter, true)?,
                    fc2: Linear::load(&m, "fc2", inter, d, true)?,
                    act,
                },
                ls2: l.pp("layer_scale2").f32("lambda1", &[d])?,
            });
        }
        let layernorm = LayerNorm::load(vb, "layernorm", d, eps)?;
        Ok(Self {
            cfg,
            patch_w,
            patch_b,
            cls_row,
            pos_cpu,
            grid0,
            pos_cache: Mutex::new(HashMap::new()),
            layers,
            layernorm,
        })
    }

    /// Patch position embeddings for a `gh`×`gw` patch grid, [gh·gw, D] (cached on the GPU).
    fn pos_for(&self, rec: &Recorder, gh: usize, gw: usize, square: bool) -> Result<Tensor> {
        let mut cache = self.pos_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cache.get(&(gh, gw)) {
            return Ok(t.clone());
        }
        let d = self.cfg.hidden_size;
        // as HF: the table is used as is only when the patch count matches and the image is square
        let data = if gh * gw == self.grid0 * self.grid0 && square {
            self.pos_cpu.clone()
        } else {
            interpolate_pos_bicubic(&self.pos_cpu, self.grid0, self.grid0, d, gh, gw)
        };
        let t = rec.ctx().upload_f32(&data, &[gh * gw, d])?;
        cache.insert((gh, gw), t.clone());
        Ok(t)
    }

    /// Embeddings for one image `pixels` [C, H, W] (H, W ≥ patch; any size, as HF) → [1 + N, D], CLS first.
    pub fn embed(&self, rec: &mut Recorder, pixels: &Tensor) -> Result<Tensor> {
        let (c, h, w) = match pixels.shape[..] {
            [c, h, w] => (c, h, w),
            _ => {
                return Err(Error::Shape {
                    op: "dinov2 embed",
                    detail: format!("pixels must be [C, H, W], got {:?}", pixels.shape),
                })
            }
        };
        let p = self.cfg.patch_size;
        if c != self.cfg.num_channels || h < p || w < p {
            return Err(Error::Shape {
                op: "dinov2 embed",
                detail: format!(
                    "pixels {:?}: model expects {} channels and sides ≥ the patch size {p}",
                    pixels.shape, self.cfg.num_channels
                ),
            });
        }
        let (gh, gw) = (h / p, w / p);
        let n = gh * gw;
        let d = self.cfg.hidden_size;
        let x = vision::patch_embed(rec, pixels, &self.patch_w, &self.patch_b, p)?;
        let pos = self.pos_for(rec, gh, gw, h == w)?;
        let x = elementwise::add(rec, &x, &pos)?;
        let out = rec.empty(&[n + 1, d], DType::F32)?;
        let row = (d * 4) as u64;
        rec.copy(&self.cls_row, 0, &out, 0, row)?;
        rec.copy(&x, 0, &out, row, n as u64 * row)?;
        Ok(out)
    }

    /// The encoder over one image; `layers` limits the depth (tests). `last_layer` is the last encoder layer's
    /// output (LLaVA's `hidden_states[-1]`), `post_norm` after the final `layernorm` (`last_hidden_state`).
    pub fn forward(&self, rec: &mut Recorder, pixels: &Tensor, layers: Option<usize>) -> Result<VisionOutput> {
        let mut x = self.embed(rec, pixels)?;
        let (n, d) = (x.rows(), self.cfg.hidden_size);
        let nh = self.cfg.num_attention_heads;
        let hd = d / nh;
        let p = attention::AttnParams { causal: false, scale: 1.0 / (hd as f32).sqrt(), kv_len: n, q_pos0: 0 };
        for l in self.layers.iter().take(layers.unwrap_or(usize::MAX)) {
            // every activation is dropped once its last reader is recorded: the recording then reuses its buffer
            // (Recorder::empty), so the encode's peak holds one of them fewer at a time
            let h = l.norm1.forward(rec, &x)?;
            let a = vit_self_attention(rec, h, [&l.q, &l.k, &l.v], nh, &p)?;
            let o = {
                let o = l.out.forward(rec, &a)?;
                drop(a);
                elementwise::mul(rec, &o, &l.ls1)?
            };
            x = elementwise::add(rec, &x, &o)?;
            drop(o);
            let m = {
                let h = l.norm2.forward(rec, &x)?;
                let m = l.mlp.forward(rec, &h)?;
                drop(h);
                elementwise::mul(rec, &m, &l.ls2)?
            };
            x = elementwise::add(rec, &x, &m)?;
        }
        let post = self.layernorm.forward(rec, &x)?;
        Ok(VisionOutput { last_layer: x, post_norm: Some(post) })
    }
}

/// PyTorch's cubic convolution kernel (A = -0.75), weights for the 4 taps around `t` ∈ [0, 1).
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let c1 = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0; // |x| ≤ 1
    let c2 = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A; // 1 < |x| < 2
    [c2(t + 1.0), c1(t), c1(1.0 - t), c2(2.0 - t)]
}

/// `F.interpolate(mode="bicubic", align_corners=False, size=(oh, ow))` of a channel-last grid `src` [ih, iw, d]
/// → [oh, ow, d], as `Dinov2Embeddings.interpolate_pos_encoding` (transformers 5) calls it: source coordinate
/// `(dst + 0.5)·in/out − 0.5` (not clamped for cubic), taps clamped to the border, computed in f64, rounded once.
pub fn interpolate_pos_bicubic(src: &[f32], ih: usize, iw: usize, d: usize, oh: usize, ow: usize) -> Vec<f32> {
    let taps = |o: usize, n_in: usize, n_out: usize| -> ([usize; 4], [f64; 4]) {
        let scale = n_in as f64 / n_out as f64;
        let real = (o as f64 + 0.5) * scale - 0.5;
        let i0 = real.floor();
        let w = cubic_weights(real - i0);
        let idx = [-1i64, 0, 1, 2].map(|k| (i0 as i64 + k).clamp(0, n_in as i64 - 1) as usize);
        (idx, w)
    };
    let mut out = vec![0f32; oh * ow * d];
    let mut acc = vec![0f64; d];
    for oy in 0..oh {
        let (ys, wy) = taps(oy, ih, oh);
        for ox in 0..ow {
            let (xs, wx) = taps(ox, iw, ow);
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (ky, &y) in ys.iter().enumerate() {
                for (kx, &x) in xs.iter().enumerate() {
                    let wgt = wy[ky] * wx[kx];
                    let row = &src[(y * iw + x) * d..(y * iw + x + 1) * d];
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += wgt * v as f64;
                    }
                }
            }
            let o = &mut out[(oy * ow + ox) * d..(oy * ow + ox + 1) * d];
            for (dst, a) in o.iter_mut().zip(&acc) {
                *dst = *a as f32;
            }
        }
    }
    out
}

/// The image size a LLaVA processor produces (`crop_size` when cropping, else `size`), from
/// `preprocessor_config.json`: a DINOv2 tower runs at that size (its position embeddings interpolated).
pub fn processor_image_size(json: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let side = |s: &serde_json::Value| -> Option<usize> {
        if let Some(n) = s.as_u64() {
            return Some(n as usize);
        }
        s.get("height").or_else(|| s.get("shortest_edge")).and_then(|x| x.as_u64()).map(|n| n as usize)
    };
    let crop = v.get("do_center_crop").and_then(|b| b.as_bool()).unwrap_or(true);
    if crop {
        if let Some(s) = v.get("crop_size").and_then(side) {
            return Some(s);
        }
    }
    v.get("size").and_then(side)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_identity_and_constant() {
        // same size: identity; constant field stays constant (weights sum to 1)
        let src: Vec<f32> = (0..3 * 3 * 2).map(|i| i as f32).collect();
        let same = interpolate_pos_bicubic(&src, 3, 3, 2, 3, 3);
        for (a, b) in same.iter().zip(&src) {
            assert!((a - b).abs() < 1e-5);
        }
        let c = vec![1.5f32; 5 * 5];
        for v in interpolate_pos_bicubic(&c, 5, 5, 1, 3, 4) {
            assert!((v - 1.5).abs() < 1e-6);
        }
    }

    #[test]
    fn processor_size() {
        assert_eq!(
            processor_image_size(br#"{"crop_size":{"height":224,"width":224},"size":{"shortest_edge":256}}"#),
            Some(224)
        );
        assert_eq!(processor_image_size(br#"{"do_center_crop":false,"size":{"height":112,"width":112}}"#), Some(112));
    }
}
