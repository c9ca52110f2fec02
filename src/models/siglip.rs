//! SigLIP vision transformer (also Idefics3's vision model, which is SigLIP with its own names and image size):
//! patch embedding (a strided Conv2d = unfold + GEMM) + learned position embeddings, pre-norm encoder layers
//! with bidirectional attention and a GELU MLP, and a final LayerNorm.
//! Reference: transformers `models/siglip/modeling_siglip.py` (`SiglipVisionEmbeddings`, `SiglipEncoderLayer`,
//! `SiglipVisionTransformer`) and `models/idefics3/modeling_idefics3.py` (`Idefics3VisionTransformer`).

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor};
use crate::nn::{vit_self_attention, Activation, LayerNorm, Linear, Mlp, VarBuilder};
use crate::ops::matmul::Fused;
use crate::ops::{attention, elementwise, vision};

fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "gelu_pytorch_tanh".into()
}
fn default_channels() -> usize {
    3
}

#[derive(Clone, Debug, Deserialize)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

impl VisionConfig {
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    pub fn validate(&self) -> Result<()> {
        if self.patch_size == 0 || self.image_size % self.patch_size != 0 {
            return Err(Error::Config(format!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::Config("vision hidden_size must be a multiple of num_attention_heads".into()));
        }
        let hd = self.head_dim();
        if hd % 4 != 0 || hd > attention::MAX_HEAD_DIM {
            return Err(Error::Config(format!("vision head_dim {hd} unsupported")));
        }
        if self.intermediate_size == 0 {
            return Err(Error::Config("vision intermediate_size must be positive".into()));
        }
        super::config_product("vision patches (image_size / patch_size)²", &[self.grid(), self.grid()])?;
        super::config_product(
            "vision patch weight num_channels × patch_size²",
            &[self.hidden_size, self.num_channels, self.patch_size, self.patch_size],
        )?;
        Activation::from_hf(&self.hidden_act)?;
        Ok(())
    }
}

struct EncoderLayer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    mlp: Mlp,
}

pub struct VisionTransformer {
    pub cfg: VisionConfig,
    patch_w: Tensor,
    patch_b: Tensor,
    pos: Tensor,
    layers: Vec<EncoderLayer>,
    post_ln: Option<LayerNorm>,
}

/// What a forward pass returns: the last encoder layer's output, and after the post-LayerNorm.
pub struct VisionOutput {
    pub last_layer: Tensor,
    pub post_norm: Option<Tensor>,
}

impl VisionTransformer {
    /// `vb` scoped at the vision model (`embeddings.*`, `encoder.layers.*`, `post_layernorm.*`).
    pub fn load(cfg: VisionConfig, vb: &VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (d, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);
        let eps = cfg.layer_norm_eps as f32;
        let act = Activation::from_hf(&cfg.hidden_act)?;
        let e = vb.pp("embeddings");
        let patch_w = e.pp("patch_embedding").matrix_as("weight", &[d, c, p, p], [d, c * p * p])?;
        let patch_b = e.pp("patch_embedding").f32("bias", &[d])?;
        let pos = e.pp("position_embedding").f32("weight", &[cfg.num_patches(), d])?;
        // grown as layers load (a hostile config's layer count would size an allocation before the first missing
        // tensor stops the loop with a typed error)
        let mut layers = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp("encoder.layers").pp(i);
            let a = l.pp("self_attn");
            let m = l.pp("mlp");
            layers.push(EncoderLayer {
                ln1: LayerNorm::load(&l, "layer_norm1", d, eps)?,
                q: Linear::load(&a, "q_proj", d, d, true)?,
                k: Linear::load(&a, "k_proj", d, d, true)?,
                v: Linear::load(&a, "v_proj", d, d, true)?,
                out: Linear::load(&a, "out_proj", d, d, true)?,
                ln2: LayerNorm::load(&l, "layer_norm2", d, eps)?,
                mlp: Mlp {
                    fc1: Linear::load(&m, "fc1", d, cfg.intermediate_size, true)?,
                    fc2: Linear::load(&m, "fc2", cfg.intermediate_size, d, true)?,
                    act,
                },
            });
        }
        let post_ln = if vb.contains("post_layernorm.weight") {
            Some(LayerNorm::load(vb, "post_layernorm", d, eps)?)
        } else {
            None
        };
        Ok(Self { cfg, patch_w, patch_b, pos, layers, post_ln })
    }

    /// Patch + position embeddings for one image `pixels` [3, H, W] (H = W = image_size) → [N, D].
    pub fn embed(&self, rec: &mut Recorder, pixels: &Tensor) -> Result<Tensor> {
        let want = [self.cfg.num_channels, self.cfg.image_size, self.cfg.image_size];
        if pixels.shape[..] != want {
            return Err(Error::Shape {
                op: "vision embed",
                detail: format!("pixels {:?}, model expects {want:?}", pixels.shape),
            });
        }
        let x = vision::patch_embed(rec, pixels, &self.patch_w, &self.patch_b, self.cfg.patch_size)?;
        elementwise::add(rec, &x, &self.pos)
    }

    /// The encoder over one image; `layers` limits the depth (tests).
    pub fn forward(&self, rec: &mut Recorder, pixels: &Tensor, layers: Option<usize>) -> Result<VisionOutput> {
        let mut x = self.embed(rec, pixels)?;
        let n = x.rows();
        let (nh, hd) = (self.cfg.num_attention_heads, self.cfg.head_dim());
        let p = attention::AttnParams { causal: false, scale: 1.0 / (hd as f32).sqrt(), kv_len: n, q_pos0: 0 };
        for l in self.layers.iter().take(layers.unwrap_or(usize::MAX)) {
            // every activation is dropped once its last reader is recorded: the recording then reuses its buffer
            // (Recorder::empty), so the encode's peak holds one of them fewer at a time
            let h = l.ln1.forward(rec, &x)?;
            let a = vit_self_attention(rec, h, [&l.q, &l.k, &l.v], nh, &p)?;
            // the residual adds fused into the out-projection's and fc2's GEMMs
            x = l.out.forward_fused(rec, &a, Fused { residual: Some(&x), ..Default::default() })?;
            drop(a);
            let h = l.ln2.forward(rec, &x)?;
            x = l.mlp.forward_residual(rec, h, Some(&x))?;
        }
        let post_norm = match &self.post_ln {
            Some(ln) => Some(ln.forward(rec, &x)?),
            None => None,
        };
        Ok(VisionOutput { last_layer: x, post_norm })
    }
}
