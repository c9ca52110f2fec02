//! [`Engine`]: a loaded model with its tokenizer, chat template and image processor — what the CLI, the server,
//! the pipeline and the browser bindings all use to answer a chat request (text + images) with streamed text.
//!
//! It keeps the encoded features of images it has seen (keyed by a hash of the image bytes), so a follow-up
//! question about the same image does not run the vision tower again.

use std::collections::HashMap;
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
    image_cache: Mutex<HashMap<u64, Arc<Vec<Tensor>>>>,
}

/// FNV-1a over the bytes: cheap, deterministic on every target.
fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (b.len() as u64).rotate_left(32)
}

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
        Self { ctx, model, tokenizer, template, image_processor, stop_tokens, image_cache: Mutex::new(HashMap::new()) }
    }

    /// Forgets the encoded features of the images seen so far (benchmarks time the encoder with it).
    pub fn clear_image_cache(&self) {
        self.image_cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
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
        let mut frames = Vec::with_capacity(images.len());
        for img in images {
            let proc = self
                .image_processor
                .as_ref()
                .ok_or_else(|| Error::UnsupportedModel("this model takes no images".into()))?;
            let p = proc.process_bytes(img)?;
            frames.push(p.frame());
        }
        self.tokenizer.encode(&self.render_prompt(messages, &frames)?)
    }

    /// Encodes one image (all its tiles) to LLM input embeddings, using the cache.
    /// Runs the vision tower (and adapter) on an image file's bytes, or takes its features from the cache:
    /// one tensor of image-token embeddings per tile, and the tile grid. Adds the time to `stats`.
    pub async fn encode_image(
        &self,
        bytes: &[u8],
        stats: &mut ChatStats,
    ) -> Result<(Arc<Vec<Tensor>>, (usize, usize))> {
        let proc = self
            .image_processor
            .as_ref()
            .ok_or_else(|| Error::UnsupportedModel("this model takes no images".into()))?;
        let vision =
            self.model.vision.as_ref().ok_or_else(|| Error::UnsupportedModel("this model takes no images".into()))?;
        let key = hash_bytes(bytes);
        let p = proc.process_bytes(bytes)?;
        let frame = p.frame();
        if let Some(hit) = self.image_cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            stats.images_from_cache += 1;
            return Ok((hit.clone(), frame));
        }
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
        let feats = Arc::new(feats);
        self.image_cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, feats.clone());
        Ok((feats, frame))
    }

    /// Answers a chat request, calling `on_text` with each UTF-8-safe piece of the answer.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        cancel: &CancelToken,
        mut on_text: impl FnMut(&str),
    ) -> Result<ChatResponse> {
        let mut stats = ChatStats::default();
        let mut feats = Vec::new();
        let mut frames = Vec::new();
        for img in &req.images {
            let (f, frame) = self.encode_image(img, &mut stats).await?;
            feats.extend(f.iter().cloned());
            frames.push(frame);
        }
        let prompt = self.render_prompt(&req.messages, &frames)?;
        let ids = self.tokenizer.encode(&prompt)?;
        let max = self.max_context();
        if ids.len() + 1 > max {
            return Err(Error::ContextOverflow { tokens: ids.len(), context: max });
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
