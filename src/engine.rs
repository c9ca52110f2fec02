//! [`Engine`]: a loaded model with its tokenizer, chat template and image processor — what the CLI, the server,
//! the pipeline and the browser bindings all use to answer a chat request (text + images) with streamed text.
//!
//! It keeps the encoded features of the images it saw last (keyed by a SHA-256 of the image bytes, at most
//! [`IMAGE_CACHE_BYTES`] of features), so a follow-up question about the same image does not run the vision tower
//! again.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::generation::{generate, now_ms, CancelToken, GenerationConfig, GenerationStats, StopReason};
use crate::gpu::{GpuContext, Recorder, Tensor};
use crate::loader::gguf::Gguf;
use crate::loader::WeightSource;
use crate::models::{Arch, Model, ModelFiles};
use crate::nn::LoadOptions;
use crate::processor::chat::{ChatTemplate, Content, ContentPart, Message};
use crate::processor::image::{Idefics3ImageProcessor, ProcessedImage, SimpleImageProcessor};
use crate::processor::prompt::expand_image_tokens;
use crate::processor::tokenizer::Tokenizer;

/// Image preprocessing matched to the model.
pub enum ImageProcessor {
    Idefics3(Idefics3ImageProcessor),
    Simple(SimpleImageProcessor),
}

impl ImageProcessor {
    pub fn process_bytes(&self, bytes: &[u8]) -> Result<ProcessedImage> {
        match self {
            ImageProcessor::Idefics3(p) => p.process_bytes(bytes),
            ImageProcessor::Simple(p) => p.process_bytes(bytes),
        }
    }
}

/// A chat request: messages (images are `ContentPart::Image` placeholders, in order) and the image bytes.
#[derive(Default)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub images: Vec<Vec<u8>>,
    pub generation: GenerationConfig,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ChatStats {
    #[serde(flatten)]
    pub generation: GenerationStats,
    pub image_encode_ms: f64,
    pub images_from_cache: usize,
}

pub struct ChatResponse {
    pub text: String,
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    pub stats: ChatStats,
}

pub struct Engine {
    pub ctx: Arc<GpuContext>,
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    pub image_processor: Option<ImageProcessor>,
    /// Tokens that end an answer: the model's eos ids and the template's end-of-turn tokens.
    pub stop_tokens: Vec<u32>,
    image_cache: Mutex<ImageCache>,
}

/// Most bytes of image features [`Engine`] keeps for images it may see again (SmolVLM-256M: 2.5 MB for an image of
/// 17 tiles); the least recently used go first.
pub const IMAGE_CACHE_BYTES: u64 = 64 << 20;

/// Encoded images by SHA-256 of their file bytes (a collision-resistant key: on a shared server a crafted
/// collision would hand one user's image features to another), with their tile grids, least recently used first.
struct ImageCache {
    entries: Vec<([u8; 32], CachedImage)>,
    /// Budget of feature bytes ([`IMAGE_CACHE_BYTES`] unless set).
    max_bytes: u64,
}

/// An encoded image: one tensor of image-token embeddings per tile, and the tile grid.
type CachedImage = (Arc<Vec<Tensor>>, (usize, usize));

impl ImageCache {
    fn key(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).into()
    }

    fn get(&mut self, key: &[u8; 32]) -> Option<CachedImage> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        let e = self.entries.remove(i);
        let hit = e.1.clone();
        self.entries.push(e);
        Some(hit)
    }

    fn insert(&mut self, key: [u8; 32], image: CachedImage) {
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push((key, image));
        self.trim();
    }

    /// Drops the least recently used entries past the budget; the newest stays even alone over it (the request
    /// that encoded it is using it).
    fn trim(&mut self) {
        let bytes = |e: &CachedImage| e.0.iter().map(|t| t.bytes()).sum::<u64>();
        let mut total: u64 = self.entries.iter().map(|(_, e)| bytes(e)).sum();
        while total > self.max_bytes && self.entries.len() > 1 {
            total -= bytes(&self.entries.remove(0).1);
        }
    }
}

/// Preprocessed pixels a chat request keeps between rendering its prompt and encoding its images; past this, an
/// image is preprocessed again when it is encoded (a request of many images holds at most this much).
const KEEP_PIXEL_BYTES: usize = 64 << 20;

impl Engine {
    /// A Hugging Face repo layout: config.json, safetensors, tokenizer.json, tokenizer_config.json /
    /// chat_template.json, preprocessor_config.json.
    pub fn load_hf(
        ctx: Arc<GpuContext>,
        files: &dyn ModelFiles,
        opts: LoadOptions,
        max_context: usize,
    ) -> Result<Self> {
        let model = Model::load_hf(&ctx, files, opts, max_context)?;
        let text = |n: &str| -> Result<Option<String>> {
            if files.exists(n) {
                Ok(Some(
                    String::from_utf8(files.read_to_vec(n)?).map_err(|_| Error::Config(format!("{n} is not UTF-8")))?,
                ))
            } else {
                Ok(None)
            }
        };
        // a decoder kept as GGUF (see `Model::load_hf`) carries a tokenizer and a chat template in its metadata
        let gguf_meta = match crate::models::text_gguf_file(&files.read_to_vec("config.json")?)? {
            Some(name) if !files.exists("tokenizer.json") || !Self::has_template_file(files) => {
                Some(Gguf::parse(files.open(&name)?.as_ref())?)
            }
            _ => None,
        };
        let tokenizer = match &gguf_meta {
            Some(g) if !files.exists("tokenizer.json") => Tokenizer::from_gguf(g)?,
            _ => Tokenizer::from_json_bytes(&files.read_to_vec("tokenizer.json")?)?,
        };
        // transformers 5 writes chat_template.jinja; 4.x chat_template.json or tokenizer_config.json
        let template = if let Some(j) = text("chat_template.jinja")? {
            let cfg = text("tokenizer_config.json")?;
            ChatTemplate::from_jinja(&j, cfg.as_deref())?
        } else if let Some(j) = text("chat_template.json")? {
            ChatTemplate::from_chat_template_json(&j)?
        } else if let Some(j) = text("tokenizer_config.json")? {
            ChatTemplate::from_tokenizer_config(&j)?
        } else if let Some(g) = &gguf_meta {
            ChatTemplate::from_gguf(g)?
        } else {
            return Err(Error::Template(
                "no chat template (chat_template.jinja, chat_template.json or tokenizer_config.json)".into(),
            ));
        };
        let image_processor = match (&model.arch, text("preprocessor_config.json")?) {
            (Arch::Llama, _) => None,
            (Arch::Idefics3, Some(j)) => Some(ImageProcessor::Idefics3(Idefics3ImageProcessor::from_json(&j)?)),
            (Arch::Idefics3, None) => Some(ImageProcessor::Idefics3(Idefics3ImageProcessor::new(Default::default())?)),
            (Arch::Llava, Some(j)) => Some(ImageProcessor::Simple(SimpleImageProcessor::from_json(&j)?)),
            (Arch::Llava, None) => return Err(Error::Config("LLaVA model without preprocessor_config.json".into())),
        };
        Ok(Self::assemble(ctx, model, tokenizer, template, image_processor))
    }

    /// A llama.cpp GGUF text model (tokenizer and chat template from its metadata) and optional mmproj.
    pub fn load_gguf(
        ctx: Arc<GpuContext>,
        text: Box<dyn WeightSource>,
        mmproj: Option<Box<dyn WeightSource>>,
        opts: LoadOptions,
        max_context: usize,
    ) -> Result<Self> {
        let meta = Gguf::parse(text.as_ref())?;
        let tokenizer = Tokenizer::from_gguf(&meta)?;
        let template = ChatTemplate::from_gguf(&meta)?;
        let has_vision = mmproj.is_some();
        let model = Model::load_gguf_parsed(&ctx, meta, text, mmproj, opts, max_context)?;
        let image_processor = if has_vision {
            let size = model.vision.as_ref().map(|v| v.tower.cfg.image_size).unwrap_or(512);
            let mut cfg = crate::processor::image::Idefics3ImageConfig::default();
            cfg.max_image_size.longest_edge = size;
            Some(ImageProcessor::Idefics3(Idefics3ImageProcessor::new(cfg)?))
        } else {
            None
        };
        Ok(Self::assemble(ctx, model, tokenizer, template, image_processor))
    }

    fn has_template_file(files: &dyn ModelFiles) -> bool {
        ["chat_template.jinja", "chat_template.json", "tokenizer_config.json"].iter().any(|n| files.exists(n))
    }

    fn assemble(
        ctx: Arc<GpuContext>,
        model: Model,
        tokenizer: Tokenizer,
        template: ChatTemplate,
        image_processor: Option<ImageProcessor>,
    ) -> Self {
        let mut stop_tokens = model.lm.cfg.eos_ids();
        stop_tokens.extend(tokenizer.eos_id());
        for t in ["<|im_end|>", "<end_of_utterance>", "<|eot_id|>", "</s>"] {
            stop_tokens.extend(tokenizer.token_id(t));
        }
        stop_tokens.sort_unstable();
        stop_tokens.dedup();
        Self {
            ctx,
            model,
            tokenizer,
            template,
            image_processor,
            stop_tokens,
            image_cache: Mutex::new(ImageCache { entries: Vec::new(), max_bytes: IMAGE_CACHE_BYTES }),
        }
    }

    /// Sets how many bytes of image features the engine keeps for images it may see again (default
    /// [`IMAGE_CACHE_BYTES`]; 0 keeps only the last image), dropping the least recently used past it.
    pub fn set_image_cache_bytes(&self, max_bytes: u64) {
        let mut c = self.image_cache.lock().unwrap_or_else(|e| e.into_inner());
        c.max_bytes = max_bytes;
        c.trim();
    }

    /// Forgets the encoded features of the images seen so far (benchmarks time the encoder with it; the
    /// evaluation clears it before each arm).
    pub fn clear_image_cache(&self) {
        self.image_cache.lock().unwrap_or_else(|e| e.into_inner()).entries.clear();
    }

    pub fn is_vlm(&self) -> bool {
        self.model.vision.is_some()
    }

    pub fn max_context(&self) -> usize {
        self.model.lm.max_context
    }

    /// Renders the chat template and expands each image placeholder into the model's image-token pattern.
    pub fn render_prompt(&self, messages: &[Message], frames: &[(usize, usize)]) -> Result<String> {
        let text = self.template.render(messages, true)?;
        let Some(v) = &self.model.vision else {
            if text.contains("<image>") && !frames.is_empty() {
                return Err(Error::UnsupportedModel("this model has no vision tower; remove the image".into()));
            }
            return Ok(text);
        };
        let n_markers = text.matches("<image>").count();
        if n_markers != frames.len() {
            return Err(Error::Template(format!(
                "the prompt has {n_markers} image markers but {} images were given",
                frames.len()
            )));
        }
        match self.model.arch {
            Arch::Idefics3 => {
                let rows: Vec<usize> = frames.iter().map(|f| f.0).collect();
                let cols: Vec<usize> = frames.iter().map(|f| f.1).collect();
                expand_image_tokens(&text, &rows, &cols, v.image_seq_len())
            }
            // LLaVA: each marker becomes image_seq_len copies of the image token — the token the config names
            // (`image_token_index`), whatever its text (a checkpoint may reuse a spare special token for it)
            _ => {
                let tok = self.tokenizer.id_to_token(v.image_token_id).ok_or_else(|| {
                    Error::Config(format!(
                        "image_token_index {} is not in the tokenizer's vocabulary",
                        v.image_token_id
                    ))
                })?;
                if tok != "<image>" && !self.tokenizer.special_ids().contains(&v.image_token_id) {
                    return Err(Error::Config(format!(
                        "the image token `{tok}` (id {}) is not a special token, so text could produce it; refusing",
                        v.image_token_id
                    )));
                }
                if tok != "<image>" && text.contains(tok.as_str()) {
                    return Err(Error::Template(format!("the prompt text contains the image token `{tok}` itself")));
                }
                Ok(text.replace("<image>", &tok.repeat(v.image_seq_len())))
            }
        }
    }

    /// The token ids of the prompt [`Engine::chat`] builds for `messages` and `images` (the images are only
    /// preprocessed on the CPU, for their tile layout; the vision tower does not run).
    pub fn prompt_ids(&self, messages: &[Message], images: &[Vec<u8>]) -> Result<Vec<u32>> {
        let frames = images.iter().map(|b| Ok(self.process_image(b)?.frame())).collect::<Result<Vec<_>>>()?;
        self.tokenizer.encode(&self.render_prompt(messages, &frames)?)
    }

    /// Preprocesses an image file's bytes on the CPU (decode, resize, tiles): what [`Engine::encode_processed`]
    /// encodes, and the tile grid the prompt needs.
    pub fn process_image(&self, bytes: &[u8]) -> Result<ProcessedImage> {
        let proc = self
            .image_processor
            .as_ref()
            .ok_or_else(|| Error::UnsupportedModel("this model takes no images".into()))?;
        proc.process_bytes(bytes)
    }

    /// Runs the vision tower (and adapter) on an image file's bytes, or takes its features from the cache:
    /// one tensor of image-token embeddings per tile, and the tile grid. Adds the time to `stats`.
    pub async fn encode_image(
        &self,
        bytes: &[u8],
        stats: &mut ChatStats,
    ) -> Result<(Arc<Vec<Tensor>>, (usize, usize))> {
        self.encode_with(bytes, None, stats).await
    }

    /// [`Engine::encode_image`] with the image already preprocessed as `p`, if it was.
    async fn encode_with(&self, bytes: &[u8], p: Option<ProcessedImage>, stats: &mut ChatStats) -> Result<CachedImage> {
        let vision =
            self.model.vision.as_ref().ok_or_else(|| Error::UnsupportedModel("this model takes no images".into()))?;
        let key = ImageCache::key(bytes);
        if let Some(hit) = self.image_cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            stats.images_from_cache += 1;
            return Ok(hit);
        }
        let p = match p {
            Some(p) => p,
            None => self.process_image(bytes)?,
        };
        let t0 = now_ms();
        let per = 3 * p.height * p.width;
        let mut feats = Vec::with_capacity(p.n_images);
        // a submission per tile: a tile's pixels and activations go back to the pool after it, and the next tile
        // takes them (an upload lands after the submissions before it), so an image split into 17 tiles holds
        // one tile's working set, not 17 tiles' pixel buffers (an upload never takes a buffer recycled inside a
        // pending recording)
        for i in 0..p.n_images {
            let mut rec = Recorder::new(&self.ctx);
            let px = self.ctx.upload_f32(&p.pixel_values[i * per..(i + 1) * per], &[3, p.height, p.width])?;
            feats.push(vision.encode(&mut rec, &px)?);
            drop(px);
            rec.submit()?;
        }
        // wait for the encoder so the timing is the encoder's, not the prefill's
        if let Some(last) = feats.last() {
            self.ctx.read_bytes(last, 0, 4).await?;
        }
        stats.image_encode_ms += now_ms() - t0;
        let image = (Arc::new(feats), p.frame());
        self.image_cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, image.clone());
        Ok(image)
    }

    /// The tile grid of each image and, while they fit in [`KEEP_PIXEL_BYTES`], their preprocessed pixels (none
    /// for images in the cache).
    fn image_grids(&self, images: &[Vec<u8>]) -> Result<(Vec<(usize, usize)>, Vec<Option<ProcessedImage>>)> {
        let (mut frames, mut kept, mut kept_bytes) = (Vec::new(), Vec::new(), 0);
        for bytes in images {
            if let Some((_, frame)) =
                self.image_cache.lock().unwrap_or_else(|e| e.into_inner()).get(&ImageCache::key(bytes))
            {
                frames.push(frame);
                kept.push(None);
                continue;
            }
            let p = self.process_image(bytes)?;
            frames.push(p.frame());
            let size = p.pixel_values.len() * 4;
            kept.push((kept_bytes + size <= KEEP_PIXEL_BYTES).then(|| {
                kept_bytes += size;
                p
            }));
        }
        Ok((frames, kept))
    }

    /// Answers a chat request, calling `on_text` with each UTF-8-safe piece of the answer.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        cancel: &CancelToken,
        mut on_text: impl FnMut(&str),
    ) -> Result<ChatResponse> {
        let mut stats = ChatStats::default();
        // the images' tile grids (CPU) first: the prompt is rendered and checked against the context before the
        // vision tower runs, so a request with more images than the context holds costs no GPU work
        let (frames, kept) = self.image_grids(&req.images)?;
        let prompt = self.render_prompt(&req.messages, &frames)?;
        let ids = self.tokenizer.encode(&prompt)?;
        let max = self.max_context();
        if ids.len() + 1 > max {
            return Err(Error::ContextOverflow { tokens: ids.len(), context: max });
        }
        let mut feats = Vec::new();
        for (img, p) in req.images.iter().zip(kept) {
            // same bytes, same grid: the cache is keyed by the bytes and preprocessing is deterministic
            let (f, _) = self.encode_with(img, p, &mut stats).await?;
            feats.extend(f.iter().cloned());
        }
        let mut rec = Recorder::new(&self.ctx);
        let x = self.model.embed_prompt(&mut rec, &ids, &feats)?;
        rec.submit()?;
        let mut cache = self.model.lm.new_cache(&self.ctx)?;
        let mut cfg = req.generation.clone();
        cfg.stop_tokens.extend(&self.stop_tokens);
        cfg.max_new_tokens = cfg.max_new_tokens.min(max - ids.len());
        let mut dec = self.tokenizer.stream_decoder(true);
        let mut text = String::new();
        let mut err = None;
        let out = generate(&self.ctx, &self.model, &mut cache, &x, &ids, &cfg, cancel, |id| match dec.push(id) {
            Ok(Some(s)) => {
                text.push_str(&s);
                on_text(&s);
                true
            }
            Ok(None) => true,
            Err(e) => {
                err = Some(e);
                false
            }
        })
        .await?;
        if let Some(e) = err {
            return Err(e);
        }
        if let Ok(Some(s)) = dec.flush() {
            text.push_str(&s);
            on_text(&s);
        }
        stats.generation = out.stats;
        Ok(ChatResponse { text, tokens: out.tokens, stop: out.stop, stats })
    }

    /// Convenience: one user turn with optional images (the image placeholders come first, as SmolVLM's examples
    /// do).
    pub fn user_message(question: &str, n_images: usize) -> Message {
        if n_images == 0 {
            return Message::text("user", question);
        }
        let mut parts: Vec<ContentPart> = (0..n_images).map(|_| ContentPart::Image {}).collect();
        parts.push(ContentPart::Text { text: question.to_string() });
        Message { role: "user".into(), content: Content::Parts(parts) }
    }
}
