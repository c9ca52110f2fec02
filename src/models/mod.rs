//! Model architectures, one file each, and [`Model`]: a Llama-family decoder with an optional vision tower +
//! adapter, loaded from a Hugging Face repo layout (safetensors) or from GGUF (+ `mmproj`).
//!
//! The adapter kind is an enum chosen by the checkpoint's config: Idefics3/SmolVLM's pixel shuffle + linear, or
//! LLaVA's linear-GELU-linear MLP. Image features replace the embeddings of the `<image>` token positions, in order.

pub mod dinov2;
pub mod gguf_names;
pub mod llama;
pub mod siglip;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Recorder, Tensor};
use crate::loader::gguf::Gguf;
use crate::loader::safetensors::ShardedSafetensors;
use crate::loader::WeightSource;
use crate::nn::{Activation, GgufStore, Linear, LoadOptions, Mlp, VarBuilder, WeightStore};
use crate::ops::vision;

pub use dinov2::{Dinov2, Dinov2Config};
pub use llama::{Llama, LlamaConfig};
pub use siglip::{VisionConfig, VisionOutput, VisionTransformer};

/// The product of config dimensions (`what` names it), or a config error when it overflows `usize` or is zero: a
/// hostile config's products are checked before they size a tensor or compare with a file's shape (an overflow
/// panics in debug builds and wraps in release).
pub(crate) fn config_product(what: &str, dims: &[usize]) -> Result<usize> {
    match dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) {
        Some(n) if n > 0 => Ok(n),
        Some(_) => Err(Error::Config(format!("{what} {dims:?} has a zero dimension"))),
        None => Err(Error::Config(format!("{what} {dims:?} overflows"))),
    }
}

/// Input width of Idefics3's connector: `scale_factor` must divide the tower's patch grid (the pixel shuffle folds
/// `scale_factor²` patches into one feature); checked before anything is loaded, for config.json and GGUF mmproj.
fn pixel_shuffle_width(vcfg: &VisionConfig, scale_factor: usize) -> Result<usize> {
    vcfg.validate()?;
    if scale_factor == 0 || vcfg.grid() % scale_factor != 0 {
        return Err(Error::Config(format!(
            "scale_factor {scale_factor} must divide the patch grid {} (image_size {} / patch_size {})",
            vcfg.grid(),
            vcfg.image_size,
            vcfg.patch_size
        )));
    }
    config_product("vision hidden_size × scale_factor²", &[vcfg.hidden_size, scale_factor, scale_factor])
}

/// A set of named files (a Hugging Face repo snapshot, user-picked files, an in-memory map).
pub trait ModelFiles {
    fn open(&self, name: &str) -> Result<Box<dyn WeightSource>>;
    fn exists(&self, name: &str) -> bool;
    fn read_to_vec(&self, name: &str) -> Result<Vec<u8>> {
        let s = self.open(name)?;
        s.read_at(0, s.len())
    }
}

/// A local directory.
#[cfg(not(target_arch = "wasm32"))]
pub struct DirFiles(pub std::path::PathBuf);

#[cfg(not(target_arch = "wasm32"))]
impl ModelFiles for DirFiles {
    fn open(&self, name: &str) -> Result<Box<dyn WeightSource>> {
        Ok(Box::new(crate::loader::FileSource::open(self.0.join(name))?))
    }
    fn exists(&self, name: &str) -> bool {
        self.0.join(name).is_file()
    }
}

/// Files held in memory (browser uploads, tests).
#[derive(Default)]
pub struct MemoryFiles(pub BTreeMap<String, std::sync::Arc<Vec<u8>>>);

struct SharedBytes(std::sync::Arc<Vec<u8>>);

impl WeightSource for SharedBytes {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.0.as_slice().read_exact_at(offset, buf)
    }
}

impl ModelFiles for MemoryFiles {
    fn open(&self, name: &str) -> Result<Box<dyn WeightSource>> {
        let b = self.0.get(name).ok_or_else(|| Error::Io(format!("missing model file `{name}`")))?;
        Ok(Box::new(SharedBytes(b.clone())))
    }
    fn exists(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// How image features become LLM input embeddings.
pub enum Connector {
    /// Idefics3 / SmolVLM: pixel shuffle by `scale_factor`, then a bias-free linear.
    PixelShuffleLinear { scale_factor: usize, proj: Linear },
    /// LLaVA: linear → activation → linear.
    Mlp(Mlp),
}

/// A vision tower: SigLIP-style (no class token) or DINOv2 (class token first). `cfg.image_size` is the size the
/// tower runs at (for DINOv2, the processor's size; its position embeddings are interpolated to it).
pub struct VisionTower {
    pub cfg: VisionConfig,
    pub kind: TowerKind,
}

pub enum TowerKind {
    Siglip(VisionTransformer),
    Dinov2(Dinov2),
}

impl From<VisionTransformer> for VisionTower {
    fn from(t: VisionTransformer) -> Self {
        Self { cfg: t.cfg.clone(), kind: TowerKind::Siglip(t) }
    }
}

impl From<Dinov2> for VisionTower {
    fn from(t: Dinov2) -> Self {
        Self { cfg: t.cfg.vision_config(), kind: TowerKind::Dinov2(t) }
    }
}

impl VisionTower {
    /// Patch (+ class) + position embeddings for one image [C, H, W].
    pub fn embed(&self, rec: &mut Recorder, pixels: &Tensor) -> Result<Tensor> {
        match &self.kind {
            TowerKind::Siglip(t) => t.embed(rec, pixels),
            TowerKind::Dinov2(t) => t.embed(rec, pixels),
        }
    }

    pub fn forward(&self, rec: &mut Recorder, pixels: &Tensor, layers: Option<usize>) -> Result<VisionOutput> {
        match &self.kind {
            TowerKind::Siglip(t) => t.forward(rec, pixels, layers),
            TowerKind::Dinov2(t) => t.forward(rec, pixels, layers),
        }
    }

    /// Whether row 0 of the output is a class token.
    pub fn has_cls(&self) -> bool {
        matches!(self.kind, TowerKind::Dinov2(_))
    }

    /// Output rows per image at `cfg.image_size`.
    pub fn tokens(&self) -> usize {
        self.cfg.num_patches() + self.has_cls() as usize
    }

    /// Runs a DINOv2 tower at another (square) image size; SigLIP towers have a fixed size.
    pub fn set_image_size(&mut self, size: usize) -> Result<()> {
        match &self.kind {
            TowerKind::Dinov2(_) if size >= self.cfg.patch_size => {
                self.cfg.image_size = size;
                Ok(())
            }
            _ if size == self.cfg.image_size => Ok(()),
            _ => Err(Error::Config(format!(
                "vision tower image size {size}: this tower runs at {} only",
                self.cfg.image_size
            ))),
        }
    }
}

/// The vision half of a VLM.
pub struct VisionStack {
    pub tower: VisionTower,
    pub connector: Connector,
    /// Feed the connector the output after the tower's final LayerNorm (Idefics3) or before it (LLaVA's
    /// `vision_feature_layer = -1`).
    pub use_post_norm: bool,
    /// Drop the tower's class token before the connector (LLaVA `vision_feature_select_strategy = "default"`).
    pub drop_cls: bool,
    pub image_token_id: u32,
}

impl VisionStack {
    /// LLM input embeddings per image token: one image `pixels` [3, H, W] → [image_seq_len, D_text].
    pub fn encode(&self, rec: &mut Recorder, pixels: &Tensor) -> Result<Tensor> {
        let out = self.tower.forward(rec, pixels, None)?;
        let feats = match (self.use_post_norm, out.post_norm) {
            (true, Some(t)) => t,
            _ => out.last_layer,
        };
        let feats = if self.drop_cls {
            let (n, d) = feats.dims2()?;
            let t = rec.empty(&[n - 1, d], DType::F32)?;
            let row = (d * 4) as u64;
            rec.copy(&feats, row, &t, 0, (n - 1) as u64 * row)?;
            t
        } else {
            feats
        };
        self.connect(rec, &feats)
    }

    pub fn connect(&self, rec: &mut Recorder, feats: &Tensor) -> Result<Tensor> {
        match &self.connector {
            Connector::PixelShuffleLinear { scale_factor, proj } => {
                let shuffled = vision::pixel_shuffle(rec, feats, self.tower.cfg.grid(), *scale_factor)?;
                proj.forward(rec, &shuffled)
            }
            Connector::Mlp(mlp) => mlp.forward(rec, feats),
        }
    }

    /// Image tokens per image.
    pub fn image_seq_len(&self) -> usize {
        match &self.connector {
            Connector::PixelShuffleLinear { scale_factor, .. } => {
                self.tower.cfg.num_patches() / (scale_factor * scale_factor)
            }
            Connector::Mlp(_) => self.tower.tokens() - self.drop_cls as usize,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Arch {
    Llama,
    Idefics3,
    Llava,
}

/// A loaded model: the decoder, and the vision stack for VLMs.
pub struct Model {
    pub arch: Arch,
    pub lm: Llama,
    pub vision: Option<VisionStack>,
}

#[derive(Deserialize)]
struct ArchProbe {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
}

#[derive(Deserialize)]
struct Idefics3Json {
    text_config: LlamaConfig,
    vision_config: VisionConfig,
    #[serde(default = "default_scale")]
    scale_factor: usize,
    #[serde(default = "default_image_token")]
    image_token_id: u32,
}
fn default_scale() -> usize {
    2
}
fn default_image_token() -> u32 {
    49190
}

#[derive(Deserialize)]
struct LlavaJson {
    text_config: LlamaConfig,
    /// SigLIP/CLIP-style [`VisionConfig`] or a [`Dinov2Config`], by its `model_type`.
    vision_config: serde_json::Value,
    #[serde(default = "default_llava_image", alias = "image_token_id")]
    image_token_index: u32,
    #[serde(default = "default_gelu")]
    projector_hidden_act: String,
    #[serde(default = "default_true")]
    multimodal_projector_bias: bool,
    #[serde(default)]
    vision_feature_layer: Option<i64>,
    #[serde(default)]
    vision_feature_select_strategy: Option<String>,
}
fn default_llava_image() -> u32 {
    32000
}
fn default_gelu() -> String {
    "gelu".into()
}
fn default_true() -> bool {
    true
}

/// Parses a safetensors repo (single file or sharded index).
pub fn open_safetensors(files: &dyn ModelFiles) -> Result<ShardedSafetensors> {
    if files.exists("model.safetensors.index.json") {
        let index = files.read_to_vec("model.safetensors.index.json")?;
        ShardedSafetensors::open(&index, |shard| files.open(shard))
    } else if files.exists("model.safetensors") {
        ShardedSafetensors::single("model.safetensors", files.open("model.safetensors")?)
    } else {
        Err(Error::Io("no model.safetensors or model.safetensors.index.json in the model files".into()))
    }
}

impl Model {
    /// Loads a Hugging Face repo layout: `config.json` + safetensors.
    ///
    /// A LLaVA repo may keep its language model as a llama.cpp GGUF file beside `config.json`:
    /// `text_config.quantization_config = {"quant_method": "gguf", "gguf_file": "<name>.gguf"}` (what transformers
    /// records for a model loaded with `gguf_file=`). The decoder then comes from that file, quantized as it is
    /// stored, and the safetensors hold only the vision tower and the projector.
    pub fn load_hf(ctx: &GpuContext, files: &dyn ModelFiles, opts: LoadOptions, max_context: usize) -> Result<Model> {
        let config = files.read_to_vec("config.json")?;
        let store = open_safetensors(files)?;
        let text_lm = match text_gguf_file(&config)? {
            Some(name) => {
                if !files.exists(&name) {
                    return Err(Error::Io(format!(
                        "config.json names the language model file `{name}` (text_config.quantization_config.gguf_file), which is not among the model files"
                    )));
                }
                let src = files.open(&name)?;
                let gguf = Gguf::parse(src.as_ref())?;
                Some(load_gguf_lm(ctx, gguf, src, opts, max_context)?.0)
            }
            None => None,
        };
        let mut model = Self::from_config_with(ctx, &config, &store, opts, max_context, text_lm)?;
        // a DINOv2 tower runs at the processor's image size (position embeddings interpolated)
        if let Some(v) = model.vision.as_mut() {
            if v.tower.has_cls() && files.exists("preprocessor_config.json") {
                if let Some(s) = dinov2::processor_image_size(&files.read_to_vec("preprocessor_config.json")?) {
                    v.tower.set_image_size(s)?;
                }
            }
        }
        Ok(model)
    }

    /// Builds the model that `config_json` describes from `store`.
    pub fn from_config(
        ctx: &GpuContext,
        config_json: &[u8],
        store: &dyn WeightStore,
        opts: LoadOptions,
        max_context: usize,
    ) -> Result<Model> {
        Self::from_config_with(ctx, config_json, store, opts, max_context, None)
    }

    /// [`Model::from_config`], with the decoder already loaded from elsewhere (LLaVA only).
    fn from_config_with(
        ctx: &GpuContext,
        config_json: &[u8],
        store: &dyn WeightStore,
        opts: LoadOptions,
        max_context: usize,
        text_lm: Option<Llama>,
    ) -> Result<Model> {
        let bad = |e: serde_json::Error| Error::Config(format!("config.json: {e}"));
        let probe: ArchProbe = serde_json::from_slice(config_json).map_err(bad)?;
        let kind = probe.model_type.clone().unwrap_or_default();
        let root = VarBuilder::new(store, ctx, opts);
        match kind.as_str() {
            "llama" | "mistral" | "smollm" | "smollm2" => {
                let cfg: LlamaConfig = serde_json::from_slice(config_json).map_err(bad)?;
                let ctx_len = max_context.min(cfg.max_position_embeddings.max(1));
                let lm = Llama::load(cfg, &root.pp("model"), &root, ctx_len)?;
                Ok(Model { arch: Arch::Llama, lm, vision: None })
            }
            "idefics3" | "smolvlm" => {
                let c: Idefics3Json = serde_json::from_slice(config_json).map_err(bad)?;
                let ctx_len = max_context.min(c.text_config.max_position_embeddings.max(1));
                let m = root.pp("model");
                let d_in = pixel_shuffle_width(&c.vision_config, c.scale_factor)?;
                let lm = Llama::load(c.text_config.clone(), &m.pp("text_model"), &root, ctx_len)?;
                let tower = VisionTower::from(VisionTransformer::load(c.vision_config.clone(), &m.pp("vision_model"))?);
                let proj = Linear::load(
                    &m.pp("connector.modality_projection"),
                    "proj",
                    d_in,
                    c.text_config.hidden_size,
                    false,
                )?;
                let vision = VisionStack {
                    tower,
                    connector: Connector::PixelShuffleLinear { scale_factor: c.scale_factor, proj },
                    use_post_norm: true,
                    drop_cls: false,
                    image_token_id: c.image_token_id,
                };
                Ok(Model { arch: Arch::Idefics3, lm, vision: Some(vision) })
            }
            "llava" => {
                let c: LlavaJson = serde_json::from_slice(config_json).map_err(bad)?;
                if c.vision_feature_layer.unwrap_or(-1) != -1 {
                    return Err(Error::UnsupportedModel("LLaVA vision_feature_layer other than -1".into()));
                }
                let is_dinov2 = c.vision_config.get("model_type").and_then(|v| v.as_str()) == Some("dinov2");
                let strategy =
                    c.vision_feature_select_strategy.as_deref().unwrap_or(if is_dinov2 { "default" } else { "full" });
                let drop_cls = match (strategy, is_dinov2) {
                    ("full", _) => false,
                    ("default", true) => true,
                    (s, _) => {
                        return Err(Error::UnsupportedModel(format!(
                            "LLaVA vision_feature_select_strategy `{s}` (supported: `full`; `default` with a DINOv2 tower — a SigLIP tower has no CLS token)"
                        )))
                    }
                };
                let ctx_len = max_context.min(c.text_config.max_position_embeddings.max(1));
                // both the older (`language_model.model.*`) and newer (`model.language_model.*`) layouts exist
                let (lm_vb, head_vb, tower_vb, proj_vb) = if root.contains("model.language_model.embed_tokens.weight")
                    || root.contains("model.multi_modal_projector.linear_1.weight")
                {
                    (
                        root.pp("model.language_model"),
                        root.clone(),
                        root.pp("model.vision_tower"),
                        root.pp("model.multi_modal_projector"),
                    )
                } else {
                    (
                        root.pp("language_model.model"),
                        root.pp("language_model"),
                        root.pp("vision_tower"),
                        root.pp("multi_modal_projector"),
                    )
                };
                let tower_vb = if tower_vb.contains("vision_model.embeddings.patch_embedding.weight") {
                    tower_vb.pp("vision_model")
                } else {
                    tower_vb
                };
                let lm = match text_lm {
                    Some(lm) => {
                        let (a, b) = (&lm.cfg, &c.text_config);
                        if a.hidden_size != b.hidden_size
                            || a.vocab_size != b.vocab_size
                            || a.num_hidden_layers != b.num_hidden_layers
                        {
                            return Err(Error::Config(format!(
                                "the GGUF language model (hidden {}, vocab {}, {} layers) does not match config.json text_config (hidden {}, vocab {}, {} layers)",
                                a.hidden_size, a.vocab_size, a.num_hidden_layers, b.hidden_size, b.vocab_size, b.num_hidden_layers
                            )));
                        }
                        lm
                    }
                    None => Llama::load(c.text_config.clone(), &lm_vb, &head_vb, ctx_len)?,
                };
                let tower: VisionTower = if is_dinov2 {
                    let vc: Dinov2Config = serde_json::from_value(c.vision_config.clone())
                        .map_err(|e| Error::Config(format!("config.json vision_config: {e}")))?;
                    Dinov2::load(vc, &tower_vb)?.into()
                } else {
                    let vc: VisionConfig = serde_json::from_value(c.vision_config.clone())
                        .map_err(|e| Error::Config(format!("config.json vision_config: {e}")))?;
                    VisionTransformer::load(vc, &tower_vb)?.into()
                };
                let (dv, dt) = (tower.cfg.hidden_size, c.text_config.hidden_size);
                let mlp = Mlp {
                    fc1: Linear::load(&proj_vb, "linear_1", dv, dt, c.multimodal_projector_bias)?,
                    fc2: Linear::load(&proj_vb, "linear_2", dt, dt, c.multimodal_projector_bias)?,
                    act: Activation::from_hf(&c.projector_hidden_act)?,
                };
                let vision = VisionStack {
                    tower,
                    connector: Connector::Mlp(mlp),
                    use_post_norm: false,
                    drop_cls,
                    image_token_id: c.image_token_index,
                };
                Ok(Model { arch: Arch::Llava, lm, vision: Some(vision) })
            }
            other => Err(Error::UnsupportedModel(format!(
                "model_type `{other}` (architectures {:?}); supported: llama, idefics3/smolvlm, llava",
                probe.architectures
            ))),
        }
    }

    /// Loads a llama.cpp GGUF text model and, optionally, its `mmproj` vision projector (SmolVLM/Idefics3 kind).
    pub fn load_gguf(
        ctx: &GpuContext,
        text: Box<dyn WeightSource>,
        mmproj: Option<Box<dyn WeightSource>>,
        opts: LoadOptions,
        max_context: usize,
    ) -> Result<Model> {
        let gguf = Gguf::parse(text.as_ref())?;
        Self::load_gguf_parsed(ctx, gguf, text, mmproj, opts, max_context)
    }

    /// [`Model::load_gguf`] with the text model's header already parsed (callers that also build the tokenizer
    /// and chat template from it parse it once: the vocabulary is the bulk of the metadata).
    pub fn load_gguf_parsed(
        ctx: &GpuContext,
        gguf: Gguf,
        text: Box<dyn WeightSource>,
        mmproj: Option<Box<dyn WeightSource>>,
        opts: LoadOptions,
        max_context: usize,
    ) -> Result<Model> {
        let (lm, store) = load_gguf_lm(ctx, gguf, text, opts, max_context)?;
        let Some(mm) = mmproj else {
            return Ok(Model { arch: Arch::Llama, lm, vision: None });
        };
        let g = Gguf::parse(mm.as_ref())?;
        let ptype = g.get_str("clip.projector_type").unwrap_or("").to_string();
        if ptype != "idefics3" {
            return Err(Error::UnsupportedModel(format!("mmproj projector_type `{ptype}` (supported: idefics3)")));
        }
        let u = |k: &str| g.get_u32(k).map(|v| v as usize);
        let vcfg = VisionConfig {
            hidden_size: u("clip.vision.embedding_length")?,
            intermediate_size: u("clip.vision.feed_forward_length")?,
            num_hidden_layers: u("clip.vision.block_count")?,
            num_attention_heads: u("clip.vision.attention.head_count")?,
            image_size: u("clip.vision.image_size")?,
            patch_size: u("clip.vision.patch_size")?,
            num_channels: 3,
            layer_norm_eps: g.get_f32("clip.vision.attention.layer_norm_epsilon").unwrap_or(1e-6) as f64,
            hidden_act: "gelu_pytorch_tanh".into(),
        };
        let scale_factor = u("clip.vision.projector.scale_factor").unwrap_or(2);
        let d_in = pixel_shuffle_width(&vcfg, scale_factor)?;
        let image_token_id = image_token_from_gguf(&store.gguf).unwrap_or(default_image_token());
        let mstore = GgufStore { gguf: g, src: mm, map: gguf_names::idefics3_mmproj, name: "mmproj".into() };
        let mroot = VarBuilder::new(&mstore, ctx, opts);
        let tower = VisionTower::from(VisionTransformer::load(vcfg.clone(), &mroot.pp("model.vision_model"))?);
        let proj =
            Linear::load(&mroot.pp("model.connector.modality_projection"), "proj", d_in, lm.cfg.hidden_size, false)?;
        let vision = VisionStack {
            tower,
            connector: Connector::PixelShuffleLinear { scale_factor, proj },
            use_post_norm: true,
            drop_cls: false,
            image_token_id,
        };
        Ok(Model { arch: Arch::Idefics3, lm, vision: Some(vision) })
    }

    /// Input embeddings for a prompt: token embeddings, with the rows at `<image>` tokens replaced by the image
    /// features (`images[i]` = [image_seq_len, D] from [`VisionStack::encode`], in prompt order).
    pub fn embed_prompt(&self, rec: &mut Recorder, ids: &[u32], images: &[Tensor]) -> Result<Tensor> {
        let vocab = self.lm.cfg.vocab_size as u32;
        if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
            return Err(Error::Tokenizer(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        let t_ids = rec.ctx().upload_u32(ids, &[ids.len()])?;
        let x = self.lm.embed(rec, &t_ids)?;
        let positions: Vec<usize> = match &self.vision {
            Some(v) => ids.iter().enumerate().filter(|(_, &t)| t == v.image_token_id).map(|(i, _)| i).collect(),
            None => vec![],
        };
        let feature_rows: usize = images.iter().map(|t| t.rows()).sum();
        if positions.len() != feature_rows {
            return Err(Error::Shape {
                op: "embed_prompt",
                detail: format!(
                    "the prompt has {} image tokens but the images give {feature_rows} feature rows",
                    positions.len()
                ),
            });
        }
        let d = x.cols();
        let row = (d * 4) as u64;
        let mut k = 0;
        for img in images {
            if img.cols() != d {
                return Err(Error::Shape {
                    op: "embed_prompt",
                    detail: format!("image features {:?} vs hidden {d}", img.shape),
                });
            }
            // copy runs of consecutive image-token positions at once
            let mut r = 0;
            while r < img.rows() {
                let start = positions[k];
                let mut len = 1;
                while r + len < img.rows() && positions[k + len] == start + len {
                    len += 1;
                }
                rec.copy(img, r as u64 * row, &x, start as u64 * row, len as u64 * row)?;
                r += len;
                k += len;
            }
        }
        Ok(x)
    }

    /// Bytes of weights on the GPU (decoder only; the vision tower is counted by the pool statistics).
    pub fn lm_weight_bytes(&self) -> u64 {
        self.lm.weight_bytes()
    }
}

/// The decoder of a llama.cpp GGUF text model, and the store it was read from (for its metadata).
fn load_gguf_lm(
    ctx: &GpuContext,
    gguf: Gguf,
    text: Box<dyn WeightSource>,
    opts: LoadOptions,
    max_context: usize,
) -> Result<(Llama, GgufStore)> {
    let arch = gguf.get_str("general.architecture")?.to_string();
    if arch != "llama" {
        return Err(Error::UnsupportedModel(format!("GGUF architecture `{arch}` (supported: llama)")));
    }
    let cfg = llama_config_from_gguf(&gguf)?;
    let ctx_len = max_context.min(cfg.max_position_embeddings.max(1));
    let store = GgufStore { gguf, src: text, map: gguf_names::llama, name: "GGUF text model".into() };
    let root = VarBuilder::new(&store, ctx, opts);
    let lm = Llama::load(cfg, &root.pp("model"), &root, ctx_len)?;
    Ok((lm, store))
}

/// `text_config.quantization_config.gguf_file` when `quant_method` is `gguf` (see [`Model::load_hf`]).
pub fn text_gguf_file(config_json: &[u8]) -> Result<Option<String>> {
    let v: serde_json::Value =
        serde_json::from_slice(config_json).map_err(|e| Error::Config(format!("config.json: {e}")))?;
    let Some(q) = v.get("text_config").and_then(|t| t.get("quantization_config")) else {
        return Ok(None);
    };
    if q.get("quant_method").and_then(|m| m.as_str()) != Some("gguf") {
        return Ok(None);
    }
    let name = q.get("gguf_file").and_then(|f| f.as_str()).ok_or_else(|| {
        Error::Config("text_config.quantization_config has quant_method gguf but no gguf_file".into())
    })?;
    // a file beside config.json, never a path out of the model directory
    if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return Err(Error::Config(format!(
            "text_config.quantization_config.gguf_file `{name}` must be a plain file name"
        )));
    }
    Ok(Some(name.to_string()))
}

fn image_token_from_gguf(g: &Gguf) -> Option<u32> {
    let tokens = g.get_str_array("tokenizer.ggml.tokens").ok()?;
    tokens.iter().position(|t| *t == "<image>").map(|i| i as u32)
}

/// `LlamaConfig` from llama.cpp metadata. GGUF stores Q/K in the interleaved rotary order.
pub fn llama_config_from_gguf(g: &Gguf) -> Result<LlamaConfig> {
    let u = |k: &str| g.get_u32(&format!("llama.{k}")).map(|v| v as usize);
    let heads = u("attention.head_count")?;
    let hidden = u("embedding_length")?;
    let vocab = match u("vocab_size") {
        Ok(v) => v,
        Err(_) => g.get_str_array("tokenizer.ggml.tokens")?.len(),
    };
    let tied = g.tensor("output.weight").is_none();
    let eos = g.get_u32("tokenizer.ggml.eos_token_id").ok();
    let bos = g.get_u32("tokenizer.ggml.bos_token_id").ok();
    Ok(LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: u("feed_forward_length")?,
        num_hidden_layers: u("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(u("attention.head_count_kv").unwrap_or(heads)),
        head_dim: Some(u("rope.dimension_count").unwrap_or(hidden / heads.max(1))),
        rms_norm_eps: g.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f64,
        rope_theta: g.get_f32("llama.rope.freq_base").unwrap_or(10000.0) as f64,
        rope_scaling: None,
        rope_parameters: None,
        max_position_embeddings: u("context_length").unwrap_or(2048),
        tie_word_embeddings: tied,
        hidden_act: "silu".into(),
        attention_bias: false,
        mlp_bias: false,
        bos_token_id: bos.map(|v| v.into()),
        eos_token_id: eos.map(|v| v.into()),
        interleaved_rope: true,
    })
}

/// The dtype names the CLI and the JS API accept.
pub fn parse_dtype(s: &str) -> Result<Option<DType>> {
    if s == "auto" {
        Ok(None)
    } else {
        s.parse().map(Some)
    }
}
