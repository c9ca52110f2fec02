//! The multimodal answer pipeline (DESIGN.md §5): image + question → **caption** → **rephrase** (one search query)
//! → **retrieve** (`search/v1` or an adapter) → **generate** (an answer citing the sources as `[n]`).
//! One implementation for native and wasm; it awaits the engine, HTTP and timers, nothing else.
//!
//! - Two arms, chosen per request ([`Arm`]): `vlm`, where the rephraser is the VLM and sees the image, the question
//!   and the caption; `legacy`, where a text-only rephraser sees the caption, tags and OCR text but not the image
//!   (the design this replaces), so the two can be compared side by side.
//! - Every prompt is data ([`Prompts`], defaults in `prompts.json`); every step has a timeout
//!   ([`StepTimeouts`]) and leaves a [`TraceEntry`] `{step, via, input, output, ms, error}`.
//! - The generator is a [`Generator`]: the local engine or a remote OpenAI-compatible endpoint; the answer streams
//!   through the caller's callback, and `[n]` citations are mapped to the retrieved documents.
//!
//! Degradation, never losing the question: a retrieval that fails, times out or answers garbage leaves the
//! answer without sources and says so in [`PipelineResult::degraded`]; a remote generator that fails before it
//! streamed anything is retried once (connection errors only) and then replaced by the local engine when one is
//! loaded and [`PipelineConfig::fallback_to_local`] is set; a rephraser that fails or writes nothing searches with
//! the question itself. Retries are bounded: at most [`MAX_RETRIES`] per remote call, after a short backoff.
//!
//! ```no_run
//! # async fn f(engine: std::sync::Arc<webvlm::engine::Engine>, image: Vec<u8>) -> webvlm::Result<()> {
//! use webvlm::pipeline::{Arm, Pipeline, PipelineConfig, PipelineEvent, PipelineRequest};
//! use webvlm::retrieval::{RetrievalClient, RetrievalConfig};
//! let search = RetrievalClient::new(RetrievalConfig::SearchV1 { base_url: "http://127.0.0.1:8080".into() })?;
//! let pipeline = Pipeline::new(PipelineConfig::default()).with_engine(engine).with_retrieval(search);
//! let req = PipelineRequest::new("What does this sign mean?", Some(image), Arm::Vlm);
//! let result = pipeline
//!     .run(&req, &Default::default(), |ev| if let PipelineEvent::Text(t) = ev { print!("{t}") })
//!     .await?;
//! for c in &result.citations {
//!     println!("[{}] {} {}", c.n, c.title, c.url);
//! }
//! # Ok(()) }
//! ```

pub mod citations;
pub mod generator;
pub mod prompts;
pub mod sse;
pub mod timer;

use std::cell::Cell;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use citations::{cited_numbers, map_citations, Citation};
pub use generator::{adapt_messages, GenerateFuture, Generator, LocalGenerator, OpenAiConfig, OpenAiGenerator};
pub use prompts::{plain, render, Prompts};

use crate::engine::{ChatRequest, Engine};
use crate::error::{Error, Result};
use crate::generation::{now_ms, CancelToken, GenerationConfig};
use crate::processor::chat::Message;
use crate::retrieval::{RetrievalClient, SearchHit, MAX_TOP_K};

/// Upper bound on retries of one remote call (retrieval, remote generation).
pub const MAX_RETRIES: u32 = 1;
/// Longest search query the pipeline sends, in chars.
pub const MAX_QUERY_CHARS: usize = 256;
/// A retrieved document's title is cut to this many chars in the generator's prompt.
pub const MAX_SOURCE_TITLE_CHARS: usize = 200;
/// A retrieved document's URL and id are each cut to this many chars in the generator's prompt.
pub const MAX_SOURCE_URL_CHARS: usize = 300;

/// Which rephraser writes the search query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    /// The VLM sees the image, the question and the caption.
    #[default]
    Vlm,
    /// A text-only rephraser sees the caption, tags and OCR text, not the image.
    Legacy,
}

impl std::str::FromStr for Arm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "vlm" => Ok(Arm::Vlm),
            "legacy" => Ok(Arm::Legacy),
            _ => Err(Error::Config(format!("arm must be `vlm` or `legacy`, got {s:?}"))),
        }
    }
}

impl std::fmt::Display for Arm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arm::Vlm => "vlm",
            Arm::Legacy => "legacy",
        })
    }
}

/// Per-step time limits, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepTimeouts {
    pub caption_ms: u64,
    pub rephrase_ms: u64,
    /// Per attempt.
    pub retrieve_ms: u64,
    /// Per generator (the local fallback gets its own).
    pub generate_ms: u64,
}

impl Default for StepTimeouts {
    fn default() -> Self {
        Self { caption_ms: 60_000, rephrase_ms: 30_000, retrieve_ms: 5_000, generate_ms: 120_000 }
    }
}

/// Everything tunable about the pipeline; serde, so it can come from a file or from JS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineConfig {
    pub prompts: Prompts,
    pub timeouts: StepTimeouts,
    /// Documents to retrieve unless the request says otherwise (1..=50).
    pub top_k: usize,
    /// Each snippet is cut to this many chars in the generator's prompt.
    pub max_snippet_chars: usize,
    pub caption_max_tokens: usize,
    pub rephrase_max_tokens: usize,
    /// Sampling of the answer (caption and rephrase are greedy).
    pub answer: GenerationConfig,
    /// Retries of a remote call that failed to connect or got a 5xx (capped at [`MAX_RETRIES`]).
    pub retries: u32,
    pub retry_backoff_ms: u64,
    /// Answer with the local engine when the remote generator fails before streaming anything.
    pub fallback_to_local: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            prompts: Prompts::default(),
            timeouts: StepTimeouts::default(),
            top_k: 5,
            max_snippet_chars: 600,
            caption_max_tokens: 64,
            rephrase_max_tokens: 32,
            answer: GenerationConfig { max_new_tokens: 256, ..Default::default() },
            retries: 1,
            retry_backoff_ms: 200,
            fallback_to_local: true,
        }
    }
}

/// One question.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineRequest {
    pub question: String,
    /// Encoded image bytes (PNG/JPEG/WebP).
    #[serde(skip)]
    pub image: Option<Vec<u8>>,
    pub arm: Arm,
    /// Tags from an external tagger, for the legacy rephraser.
    pub tags: Vec<String>,
    /// Text read from the image by an external OCR, for the legacy rephraser.
    pub ocr_text: Option<String>,
    /// Overrides [`PipelineConfig::top_k`].
    pub k: Option<usize>,
}

impl PipelineRequest {
    pub fn new(question: impl Into<String>, image: Option<Vec<u8>>, arm: Arm) -> Self {
        Self { question: question.into(), image, arm, ..Default::default() }
    }
}

/// A pipeline step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Caption,
    Rephrase,
    Retrieve,
    Generate,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Caption => "caption",
            Step::Rephrase => "rephrase",
            Step::Retrieve => "retrieve",
            Step::Generate => "generate",
        })
    }
}

/// What one step did. `input` is the prompt as the model saw it (chat template applied, `<image>` where the image
/// goes) or the query sent to the search engine; `output` is the model's text or a summary of the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEntry {
    pub step: Step,
    /// What ran the step: `vlm`, `text`, `local`, `remote URL`, the search engine, or `question` (no rephraser).
    pub via: String,
    pub input: String,
    pub output: String,
    pub ms: f64,
    pub error: Option<String>,
}

/// What the callback of [`Pipeline::run`] receives while a request runs.
#[derive(Debug)]
pub enum PipelineEvent<'a> {
    /// A step finished (also a failed one).
    Step(&'a TraceEntry),
    /// A new piece of the answer.
    Text(&'a str),
}

/// The answer and how it came to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineResult {
    pub question: String,
    pub arm: Arm,
    pub caption: String,
    /// The search query (the question itself when no rephraser ran or it failed).
    pub query: String,
    /// Retrieved documents, numbered from 1 in the prompt and in `citations`.
    pub documents: Vec<SearchHit>,
    pub answer: String,
    pub citations: Vec<Citation>,
    /// Why the answer is less than it should be (no sources, fallback generator, cut off), or `None`.
    pub degraded: Option<String>,
    pub trace: Vec<TraceEntry>,
}

/// The pipeline: a config plus the components it drives. Build with [`Pipeline::new`] and the `with_*` methods.
pub struct Pipeline {
    pub config: PipelineConfig,
    engine: Option<Arc<Engine>>,
    text_engine: Option<Arc<Engine>>,
    retrieval: Option<RetrievalClient>,
    generator: Option<Box<dyn Generator>>,
}

impl Pipeline {
    pub fn new(config: PipelineConfig) -> Self {
        Self { config, engine: None, text_engine: None, retrieval: None, generator: None }
    }

    /// The local model: captioner and VLM rephraser (when it has a vision tower), legacy rephraser (unless
    /// [`with_text_engine`](Self::with_text_engine)), and the local generator.
    pub fn with_engine(mut self, engine: Arc<Engine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// A separate text LM for the legacy arm's rephraser.
    pub fn with_text_engine(mut self, engine: Arc<Engine>) -> Self {
        self.text_engine = Some(engine);
        self
    }

    pub fn with_retrieval(mut self, client: RetrievalClient) -> Self {
        self.retrieval = Some(client);
        self
    }

    /// The answer generator (e.g. [`OpenAiGenerator`]); without one the local engine answers.
    pub fn with_generator(mut self, generator: Box<dyn Generator>) -> Self {
        self.generator = Some(generator);
        self
    }

    pub fn engine(&self) -> Option<&Arc<Engine>> {
        self.engine.as_ref()
    }

    /// Runs one request. `on_event` sees each finished step and each piece of the answer as it streams.
    ///
    /// Fails only on a request it cannot start (empty question, bad `k`, nothing to generate with), when `cancel`
    /// is set, or when the GPU device is lost; every other failure is recorded in the trace and in `degraded`.
    pub async fn run(
        &self,
        req: &PipelineRequest,
        cancel: &CancelToken,
        mut on_event: impl FnMut(PipelineEvent<'_>),
    ) -> Result<PipelineResult> {
        let question = req.question.trim();
        if question.is_empty() {
            return Err(Error::Config("the question is empty".into()));
        }
        let k = req.k.unwrap_or(self.config.top_k);
        if k == 0 || k > MAX_TOP_K {
            return Err(Error::Config(format!("k must be from 1 to {MAX_TOP_K}, got {k}")));
        }
        if self.generator.is_none() && self.engine.is_none() {
            return Err(Error::Config("no generator: load a local model or configure a remote generator".into()));
        }
        let mut trace: Vec<TraceEntry> = Vec::new();
        let mut degraded: Vec<String> = Vec::new();
        let p = &self.config.prompts;
        let safe_question = plain(question);

        // 1. caption
        let vlm = self.engine.as_ref().filter(|e| e.is_vlm());
        let mut caption = String::new();
        if let Some(image) = &req.image {
            let t0 = now_ms();
            let (via, input, out) = match vlm {
                Some(engine) => {
                    let messages = vec![Engine::user_message(&p.caption, 1)];
                    let messages = adapt_messages(engine, &messages);
                    let input = engine.template.render(&messages, true).unwrap_or_default();
                    let out = self
                        .local_chat(
                            engine,
                            "caption",
                            messages,
                            vec![image.clone()],
                            self.config.caption_max_tokens,
                            self.config.timeouts.caption_ms,
                            cancel,
                        )
                        .await;
                    ("vlm", input, out)
                }
                None => {
                    ("none", String::new(), Err(Error::UnsupportedModel("no local VLM to caption the image".into())))
                }
            };
            check_cancel(cancel)?;
            check_device(&out)?;
            let error = out.as_ref().err().map(|e| e.to_string());
            caption = out.map(|c| plain(&c)).unwrap_or_default();
            let entry = TraceEntry {
                step: Step::Caption,
                via: via.into(),
                input,
                output: caption.clone(),
                ms: now_ms() - t0,
                error,
            };
            push(&mut trace, entry, &mut on_event);
        }
        let safe_caption = if caption.is_empty() { "(none)".to_string() } else { caption.clone() };

        // 2. rephrase
        let t0 = now_ms();
        let (via, input, out) = match req.arm {
            Arm::Vlm => match self.engine.as_ref() {
                Some(engine) => {
                    let text = render(&p.rephrase_vlm, &[("question", &safe_question), ("caption", &safe_caption)]);
                    let with_image = engine.is_vlm() && req.image.is_some();
                    let images: Vec<Vec<u8>> = if with_image { req.image.iter().cloned().collect() } else { vec![] };
                    let messages = vec![Engine::user_message(&text, images.len())];
                    let messages = adapt_messages(engine, &messages);
                    let input = engine.template.render(&messages, true).unwrap_or_default();
                    let out = self
                        .local_chat(
                            engine,
                            "rephrase",
                            messages,
                            images,
                            self.config.rephrase_max_tokens,
                            self.config.timeouts.rephrase_ms,
                            cancel,
                        )
                        .await;
                    (if with_image { "vlm" } else { "text" }, input, Some(out))
                }
                None => ("question", question.to_string(), None),
            },
            Arm::Legacy => match self.text_engine.as_ref().or(self.engine.as_ref()) {
                Some(engine) => {
                    let tags =
                        req.tags.iter().map(|t| plain(t)).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(", ");
                    let ocr = req.ocr_text.as_deref().map(plain).unwrap_or_default();
                    let none = |s: String| {
                        if s.is_empty() {
                            "(none)".to_string()
                        } else {
                            s
                        }
                    };
                    let text = render(
                        &p.rephrase_legacy,
                        &[
                            ("question", &safe_question),
                            ("caption", &safe_caption),
                            ("tags", &none(tags)),
                            ("ocr", &none(ocr)),
                        ],
                    );
                    let messages = vec![Message::text("user", &text)];
                    let messages = adapt_messages(engine, &messages);
                    let input = engine.template.render(&messages, true).unwrap_or_default();
                    let out = self
                        .local_chat(
                            engine,
                            "rephrase",
                            messages,
                            vec![],
                            self.config.rephrase_max_tokens,
                            self.config.timeouts.rephrase_ms,
                            cancel,
                        )
                        .await;
                    ("text", input, Some(out))
                }
                None => ("question", question.to_string(), None),
            },
        };
        check_cancel(cancel)?;
        if let Some(o) = &out {
            check_device(o)?;
        }
        let (query, output, error) = match out {
            None => (question.to_string(), question.to_string(), None),
            Some(Ok(text)) => {
                let q = clean_query(&text);
                if q.is_empty() {
                    (
                        question.to_string(),
                        text,
                        Some("the rephraser wrote no query; searching with the question".to_string()),
                    )
                } else {
                    (q.clone(), q, None)
                }
            }
            Some(Err(e)) => (question.to_string(), String::new(), Some(format!("{e}; searching with the question"))),
        };
        let query = truncate_chars(&query, MAX_QUERY_CHARS);
        push(
            &mut trace,
            TraceEntry { step: Step::Rephrase, via: via.into(), input, output, ms: now_ms() - t0, error },
            &mut on_event,
        );

        // 3. retrieve
        let mut documents: Vec<SearchHit> = Vec::new();
        if let Some(client) = &self.retrieval {
            let t0 = now_ms();
            let out = self.retrieve(client, &query, k, cancel).await;
            check_cancel(cancel)?;
            let (output, error) = match out {
                Ok(resp) => {
                    documents = resp.results;
                    for (i, d) in documents.iter_mut().enumerate() {
                        d.rank = i + 1;
                    }
                    let list =
                        documents.iter().map(|d| format!("[{}] {}", d.rank, d.id)).collect::<Vec<_>>().join(", ");
                    (
                        format!("{} documents from {} ({:.1} ms): {list}", documents.len(), resp.engine, resp.took_ms),
                        None,
                    )
                }
                Err(e) => {
                    degraded.push(format!("retrieval failed ({e}); the answer has no sources"));
                    (String::new(), Some(e.to_string()))
                }
            };
            let entry = TraceEntry {
                step: Step::Retrieve,
                via: client.engine().into(),
                input: query.clone(),
                output,
                ms: now_ms() - t0,
                error,
            };
            push(&mut trace, entry, &mut on_event);
        }

        // 4. generate
        let user = if documents.is_empty() {
            render(&p.generate_no_sources, &[("question", &safe_question), ("caption", &safe_caption)])
        } else {
            let sources = documents
                .iter()
                .map(|d| source_text(&p.source, d, self.config.max_snippet_chars))
                .collect::<Vec<_>>()
                .join("\n");
            render(&p.generate, &[("question", &safe_question), ("caption", &safe_caption), ("sources", &sources)])
        };
        let messages = vec![Message::text("system", &p.generate_system), Message::text("user", &user)];
        let local = self.engine.as_ref().map(|e| LocalGenerator::new(e.clone()));
        let primary: &dyn Generator = match (&self.generator, &local) {
            (Some(g), _) => g.as_ref(),
            (None, Some(l)) => l,
            (None, None) => unreachable!("checked at the start"),
        };
        let mut answer = String::new();
        let mut streamed = false;
        let (out, first_entry) = self
            .generate_with_retry(primary, &messages, cancel, &mut |s: &str| {
                streamed = true;
                answer.push_str(s);
                on_event(PipelineEvent::Text(s));
            })
            .await;
        push(&mut trace, first_entry, &mut on_event);
        check_cancel(cancel)?;
        check_device(&out)?;
        if let Err(e) = out {
            let fallback =
                local.as_ref().filter(|_| self.generator.is_some() && self.config.fallback_to_local && !streamed);
            match fallback {
                Some(l) => {
                    let (out2, entry) = self
                        .generate_once(l, &messages, cancel, &mut |s: &str| {
                            answer.push_str(s);
                            on_event(PipelineEvent::Text(s));
                        })
                        .await;
                    push(&mut trace, entry, &mut on_event);
                    check_cancel(cancel)?;
                    check_device(&out2)?;
                    match out2 {
                        Ok(_) => degraded.push(format!("the remote generator failed ({e}); the local model answered")),
                        Err(e2) => degraded
                            .push(format!("no answer: the remote generator failed ({e}), the local model too ({e2})")),
                    }
                }
                None if streamed => degraded.push(format!("the answer is cut off: {e}")),
                None => degraded.push(format!("no answer: the generator failed ({e})")),
            }
        }
        let citations = map_citations(&answer, &documents);
        Ok(PipelineResult {
            question: question.to_string(),
            arm: req.arm,
            caption,
            query,
            documents,
            answer,
            citations,
            degraded: if degraded.is_empty() { None } else { Some(degraded.join("; ")) },
            trace,
        })
    }

    /// One local chat turn with a deadline: the timer covers awaiting futures, the per-token check covers a
    /// native engine whose readbacks block the thread.
    #[allow(clippy::too_many_arguments)]
    async fn local_chat(
        &self,
        engine: &Engine,
        step: &str,
        messages: Vec<Message>,
        images: Vec<Vec<u8>>,
        max_tokens: usize,
        ms: u64,
        cancel: &CancelToken,
    ) -> Result<String> {
        let req = ChatRequest {
            messages,
            images,
            generation: GenerationConfig { max_new_tokens: max_tokens, ..Default::default() },
        };
        let step_cancel = CancelToken::default();
        let deadline = now_ms() + ms as f64;
        let timed_out = Cell::new(false);
        let fut = engine.chat(&req, &step_cancel, |_| {
            if now_ms() > deadline {
                timed_out.set(true);
                step_cancel.cancel();
            }
            if cancel.is_cancelled() {
                step_cancel.cancel();
            }
        });
        let out = timer::timeout(step, ms, fut).await;
        if timed_out.get() {
            return Err(Error::Timeout { step: step.to_string(), ms });
        }
        Ok(out?.text)
    }

    /// Search with at most [`MAX_RETRIES`] retries (connection errors and HTTP errors only, not timeouts or
    /// malformed answers), each attempt under the retrieve timeout; a cancel ends the wait at once.
    async fn retrieve(
        &self,
        client: &RetrievalClient,
        query: &str,
        k: usize,
        cancel: &CancelToken,
    ) -> Result<crate::retrieval::SearchResponse> {
        let ms = self.config.timeouts.retrieve_ms;
        let retries = self.config.retries.min(MAX_RETRIES);
        let mut attempt = 0;
        loop {
            match timer::or_cancelled(cancel, timer::timeout("retrieve", ms, client.search(query, k))).await {
                Err(Error::Http { .. }) if attempt < retries && !cancel.is_cancelled() => {
                    attempt += 1;
                    timer::sleep(self.config.retry_backoff_ms).await;
                }
                other => return other,
            }
        }
    }

    /// The primary generator, retried (bounded) on connection/HTTP errors that came before any text.
    async fn generate_with_retry(
        &self,
        g: &dyn Generator,
        messages: &[Message],
        cancel: &CancelToken,
        on_text: &mut dyn FnMut(&str),
    ) -> (Result<String>, TraceEntry) {
        let retries = self.config.retries.min(MAX_RETRIES);
        let mut attempt = 0;
        loop {
            let any = Cell::new(false);
            let (out, mut entry) = self
                .generate_once(g, messages, cancel, &mut |s: &str| {
                    any.set(true);
                    on_text(s)
                })
                .await;
            match &out {
                Err(Error::Http { .. }) if attempt < retries && !any.get() && !cancel.is_cancelled() => {
                    attempt += 1;
                    timer::sleep(self.config.retry_backoff_ms).await;
                }
                _ => {
                    if attempt > 0 {
                        if let Some(e) = &mut entry.error {
                            e.push_str(&format!(" (after {attempt} retry)"));
                        }
                    }
                    return (out, entry);
                }
            }
        }
    }

    /// One generator call under the generate timeout, with its trace entry; a cancel ends it within
    /// [`timer::CANCEL_POLL_MS`] even while no text arrives.
    async fn generate_once(
        &self,
        g: &dyn Generator,
        messages: &[Message],
        cancel: &CancelToken,
        on_text: &mut dyn FnMut(&str),
    ) -> (Result<String>, TraceEntry) {
        let ms = self.config.timeouts.generate_ms;
        let t0 = now_ms();
        let input = g.describe(messages);
        let step_cancel = CancelToken::default();
        let deadline = t0 + ms as f64;
        let timed_out = Cell::new(false);
        let mut text = String::new();
        let mut cb = |s: &str| {
            text.push_str(s);
            on_text(s);
            if now_ms() > deadline {
                timed_out.set(true);
                step_cancel.cancel();
            }
            if cancel.is_cancelled() {
                step_cancel.cancel();
            }
        };
        let fut = g.generate(messages, &self.config.answer, &step_cancel, &mut cb);
        // The callback only runs when text arrives: a remote generator still waiting for its response or first
        // chunk must also stop when the caller cancels, not at the (long) generate timeout.
        let mut out = timer::timeout("generate", ms, timer::or_cancelled(cancel, fut)).await;
        if cancel.is_cancelled() {
            step_cancel.cancel();
        }
        if timed_out.get() {
            out = Err(Error::Timeout { step: "generate".into(), ms });
        }
        let entry = TraceEntry {
            step: Step::Generate,
            via: g.name(),
            input,
            output: text,
            ms: now_ms() - t0,
            error: out.as_ref().err().map(|e| e.to_string()),
        };
        (out, entry)
    }
}

/// Records a finished step and tells the caller.
fn push(trace: &mut Vec<TraceEntry>, entry: TraceEntry, on_event: &mut dyn FnMut(PipelineEvent<'_>)) {
    on_event(PipelineEvent::Step(&entry));
    trace.push(entry);
}

/// A lost GPU device ends the run: every later local step would fail too, and the engine must be created again.
fn check_device<T>(out: &Result<T>) -> Result<()> {
    match out {
        Err(Error::DeviceLost(msg)) => Err(Error::DeviceLost(msg.clone())),
        _ => Ok(()),
    }
}

fn check_cancel(cancel: &CancelToken) -> Result<()> {
    if cancel.is_cancelled() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

/// The query in a rephraser's reply: its first non-empty line, without a `Query:` label, quotes or backticks,
/// whitespace collapsed.
pub fn clean_query(text: &str) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let mut q = line;
    for label in ["search query:", "query:"] {
        // `get`, not `[..]`: the label's length may fall inside a multi-byte char of a non-ASCII query
        if q.get(..label.len()).is_some_and(|p| p.eq_ignore_ascii_case(label)) {
            q = q[label.len()..].trim_start();
        }
    }
    let q = q.trim_matches(|c: char| c == '"' || c == '\'' || c == '`' || c == '“' || c == '”' || c.is_whitespace());
    q.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One retrieved document as the generator's prompt lists it (`template` is [`Prompts::source`]): every field
/// defused with [`plain`] and cut (snippet to `max_snippet_chars`, title and URL/id to fixed limits), so a hostile
/// or broken index cannot flood the prompt.
fn source_text(template: &str, d: &SearchHit, max_snippet_chars: usize) -> String {
    let n = d.rank.to_string();
    let title = truncate_chars(&plain(&d.title), MAX_SOURCE_TITLE_CHARS);
    let snippet = truncate_chars(&plain(&d.snippet), max_snippet_chars);
    let url = truncate_chars(&plain(&d.url), MAX_SOURCE_URL_CHARS);
    let id = truncate_chars(&plain(&d.id), MAX_SOURCE_URL_CHARS);
    render(template, &[("n", &n), ("title", &title), ("snippet", &snippet), ("url", &url), ("id", &id)])
}

/// The first `n` chars of `s` (an ellipsis marks a cut).
fn truncate_chars(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_cleanup() {
        assert_eq!(clean_query("\n  Query: \"red octagon  sign meaning\"\nmore"), "red octagon sign meaning");
        assert_eq!(clean_query("search query: `x`"), "x");
        assert_eq!(clean_query("  \n "), "");
    }

    #[test]
    fn query_cleanup_never_splits_a_char() {
        // "search query:" is 13 bytes: byte 13 falls inside `本`/`á` here, which used to panic
        for q in ["日本の交通標識", "señal de tráfico", "ñ", "Query: 日本の交通標識", "search query: señal"]
        {
            let _ = clean_query(q);
        }
        assert_eq!(clean_query("日本の交通標識"), "日本の交通標識");
        assert_eq!(clean_query("señal de tráfico"), "señal de tráfico");
        assert_eq!(clean_query("Query: 日本の交通標識"), "日本の交通標識");
        assert_eq!(clean_query("SEARCH QUERY: «señal»"), "«señal»");
    }

    #[test]
    fn source_fields_are_cut_on_char_boundaries() {
        let hit = SearchHit {
            id: "é".repeat(1000),
            title: "標".repeat(5000),
            url: format!("https://x.example/{}", "ü".repeat(5000)),
            snippet: "s".repeat(5000),
            score: 1.0,
            rank: 1,
            source: String::new(),
        };
        let text = source_text("[{n}] {title} | {snippet} | {url} | {id}", &hit, 600);
        let fields: Vec<&str> = text.split(" | ").collect();
        assert_eq!(fields.len(), 4, "{text}");
        assert_eq!(fields[0].chars().count(), "[1] ".len() + MAX_SOURCE_TITLE_CHARS + 1, "title cut, with `…`");
        assert_eq!(fields[1].chars().count(), 600 + 1);
        assert_eq!(fields[2].chars().count(), MAX_SOURCE_URL_CHARS + 1);
        assert_eq!(fields[3].chars().count(), MAX_SOURCE_URL_CHARS + 1);
        assert!(fields[2].starts_with("https://x.example/ü") && fields[3].ends_with('…'));
        // short fields are left alone
        let short = SearchHit { id: "d1".into(), title: "Stop".into(), url: "https://a.b/".into(), ..hit };
        assert_eq!(source_text("{title} {url} {id}", &short, 600), "Stop https://a.b/ d1");
    }

    #[test]
    fn arm_parses_and_serializes() {
        assert_eq!("Legacy".parse::<Arm>().unwrap(), Arm::Legacy);
        assert!("x".parse::<Arm>().is_err());
        assert_eq!(serde_json::to_string(&Arm::Vlm).unwrap(), "\"vlm\"");
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé…");
        assert_eq!(truncate_chars("hé", 2), "hé");
    }
}
