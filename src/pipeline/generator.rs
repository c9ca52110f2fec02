//! The answer generator, behind a trait so it can be swapped independently of the rest of the pipeline:
//! [`LocalGenerator`] (the loaded [`Engine`], text-only prompt) and [`OpenAiGenerator`] (a remote
//! OpenAI-compatible `POST /v1/chat/completions` with `stream: true`: llama.cpp's server, vLLM, Ollama, or
//! `webvlm-server --model`).
//!
//! Errors of the remote client: a connection failure or a non-2xx status is [`Error::Http`] (with the server's
//! `{"error":{"message"}}` when it sent one), an `{"error":…}` event inside the stream is [`Error::Http`] too,
//! a body that is neither SSE chunks nor a completion is [`Error::BadResponse`].
//!
//! Bounded: a completion body over [`MAX_COMPLETION_BODY_BYTES`], an SSE line or event over
//! [`sse::MAX_LINE_BYTES`](super::sse::MAX_LINE_BYTES) / [`sse::MAX_EVENT_BYTES`](super::sse::MAX_EVENT_BYTES) or
//! an answer over [`MAX_ANSWER_BYTES`] is [`Error::BadResponse`]; an error body is read for at most
//! [`ERROR_BODY_TIMEOUT_MS`] and 64 KiB. The `cancel` token ends the call within
//! [`CANCEL_POLL_MS`](super::timer::CANCEL_POLL_MS) at any point, also while it waits for the response.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sse::SseParser;
use super::timer;
use crate::engine::{ChatRequest, Engine};
use crate::error::{Error, Result};
use crate::generation::{CancelToken, GenerationConfig};
use crate::processor::chat::{Content, ContentPart, Message};
use crate::retrieval::body::{read_limited, MAX_ERROR_BODY_BYTES};

/// Largest non-streamed completion body the remote client reads.
pub const MAX_COMPLETION_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Largest answer the remote client accumulates (far beyond any `max_tokens`).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// How long the remote client waits for a non-2xx response's body (the status is known; the body only adds the
/// server's message).
pub const ERROR_BODY_TIMEOUT_MS: u64 = 10_000;

/// The future a [`Generator`] returns (not `Send`: in the browser it holds JS handles).
pub type GenerateFuture<'a> = Pin<Box<dyn Future<Output = Result<String>> + 'a>>;

/// Turns chat messages into a streamed answer.
pub trait Generator {
    /// What answered, for the trace (`local`, `remote http://…`).
    fn name(&self) -> String;

    /// The prompt as this generator will present it to its model, for the trace.
    fn describe(&self, messages: &[Message]) -> String {
        messages.iter().map(|m| format!("{}: {}", m.role, message_text(m))).collect::<Vec<_>>().join("\n\n")
    }

    /// Generates the answer, calling `on_text` with each new piece; returns the whole answer. Should stop soon
    /// after `cancel` is set (the pipeline sets it when the step's deadline passes).
    fn generate<'a>(
        &'a self,
        messages: &'a [Message],
        cfg: &'a GenerationConfig,
        cancel: &'a CancelToken,
        on_text: &'a mut dyn FnMut(&str),
    ) -> GenerateFuture<'a>;
}

/// A message's text parts, images as `<image>`.
pub fn message_text(m: &Message) -> String {
    match &m.content {
        Content::Text(t) => t.clone(),
        Content::Parts(parts) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => text.as_str(),
                ContentPart::Image {} => "<image>",
            })
            .collect(),
    }
}

/// `messages` in the content shape the engine's chat template renders: templates written for VLMs (SmolVLM's)
/// iterate over a list of parts and render a plain string as nothing, text templates (SmolLM2's) concatenate a
/// string and fail on a list. One probe render decides; text-only messages are converted, image messages kept.
pub fn adapt_messages(engine: &Engine, messages: &[Message]) -> Vec<Message> {
    const PROBE: &str = "webvlm-probe-7f3a";
    let strings_work =
        engine.template.render(&[Message::text("user", PROBE)], false).map(|r| r.contains(PROBE)).unwrap_or(false);
    messages
        .iter()
        .map(|m| match (&m.content, strings_work) {
            (Content::Text(t), false) => Message::parts(&m.role, vec![ContentPart::Text { text: t.clone() }]),
            (Content::Parts(parts), true) if parts.iter().all(|p| matches!(p, ContentPart::Text { .. })) => {
                Message::text(&m.role, &message_text(m))
            }
            _ => m.clone(),
        })
        .collect()
}

// ---- local ---------------------------------------------------------------------------------------------------

/// The loaded model answers.
pub struct LocalGenerator {
    pub engine: Arc<Engine>,
}

impl LocalGenerator {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

impl Generator for LocalGenerator {
    fn name(&self) -> String {
        "local".into()
    }

    fn describe(&self, messages: &[Message]) -> String {
        let messages = adapt_messages(&self.engine, messages);
        self.engine.template.render(&messages, true).unwrap_or_else(|e| format!("(template error: {e})"))
    }

    fn generate<'a>(
        &'a self,
        messages: &'a [Message],
        cfg: &'a GenerationConfig,
        cancel: &'a CancelToken,
        on_text: &'a mut dyn FnMut(&str),
    ) -> GenerateFuture<'a> {
        Box::pin(async move {
            let messages = adapt_messages(&self.engine, messages);
            let req = ChatRequest { messages, images: Vec::new(), generation: cfg.clone() };
            let resp = self.engine.chat(&req, cancel, |s| on_text(s)).await?;
            Ok(resp.text)
        })
    }
}

// ---- remote (OpenAI-compatible) ------------------------------------------------------------------------------

/// Where the remote generator is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiConfig {
    /// `http://host:port` (then `/v1/chat/completions` is appended) or the full `…/chat/completions` URL.
    pub url: String,
    /// The `model` field of the request (servers with one model ignore it).
    #[serde(default = "default_model")]
    pub model: String,
    /// Sent as `Authorization: Bearer …`.
    #[serde(default)]
    pub api_key: Option<String>,
}

fn default_model() -> String {
    "default".into()
}

impl OpenAiConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), model: default_model(), api_key: None }
    }

    /// The chat-completions endpoint.
    pub fn endpoint(&self) -> String {
        let u = self.url.trim_end_matches('/');
        if u.ends_with("/chat/completions") {
            u.to_string()
        } else if u.ends_with("/v1") {
            format!("{u}/chat/completions")
        } else {
            format!("{u}/v1/chat/completions")
        }
    }
}

/// A remote OpenAI-compatible endpoint answers, streamed over SSE.
pub struct OpenAiGenerator {
    config: OpenAiConfig,
    endpoint: String,
    http: reqwest::Client,
}

impl OpenAiGenerator {
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        let endpoint = config.endpoint();
        reqwest::Url::parse(&endpoint).map_err(|e| {
            Error::Config(format!("generator URL {:?} is not a URL ({e}); e.g. http://127.0.0.1:8081", config.url))
        })?;
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { config, endpoint, http })
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    fn service(&self) -> String {
        format!("generator ({})", self.endpoint)
    }

    async fn run(
        &self,
        messages: &[Message],
        cfg: &GenerationConfig,
        cancel: &CancelToken,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<String> {
        let body = request_body(&self.config.model, messages, cfg);
        let mut rb = self.http.post(&self.endpoint).header("accept", "text/event-stream").json(&body);
        if let Some(key) = &self.config.api_key {
            rb = rb.bearer_auth(key);
        }
        let resp = rb.send().await.map_err(|e| http_err(&self.endpoint, e))?;
        let too_big = |what: &str, limit: usize| Error::BadResponse {
            service: self.service(),
            detail: format!("{what} exceeds the limit of {limit} bytes"),
        };
        let status = resp.status();
        let is_json = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !status.is_success() {
            // the message is a nicety: a slow, broken or huge error body must not hold the error back
            let read =
                async { read_limited(resp, MAX_ERROR_BODY_BYTES).await.map_err(|e| http_err(&self.endpoint, e)) };
            let message = match timer::timeout("reading the error body", ERROR_BODY_TIMEOUT_MS, read).await {
                Ok(body) => error_text(&body.bytes),
                Err(e) => format!("(no body: {e})"),
            };
            return Err(Error::Http { url: self.endpoint.clone(), detail: format!("status {status}: {message}") });
        }
        if is_json {
            // a server that ignored `stream: true`: one completion object
            let body = read_limited(resp, MAX_COMPLETION_BODY_BYTES).await.map_err(|e| http_err(&self.endpoint, e))?;
            if body.over_limit {
                return Err(too_big("the completion body", MAX_COMPLETION_BODY_BYTES));
            }
            let v: Value = serde_json::from_slice(&body.bytes)
                .map_err(|e| Error::BadResponse { service: self.service(), detail: format!("not JSON: {e}") })?;
            let text = self.chunk_text(&v)?;
            on_text(&text);
            return Ok(text);
        }
        let mut stream = resp.bytes_stream();
        let mut parser = SseParser::new();
        let mut answer = String::new();
        let mut done = false;
        'read: while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| http_err(&self.endpoint, e))?;
            let events = parser.push(&piece).map_err(|e| Error::BadResponse {
                service: self.service(),
                detail: format!("{e} (a stream that never ends a line or an event)"),
            })?;
            for ev in events {
                if self.event(&ev.data, &mut answer, on_text)? {
                    done = true;
                    break 'read;
                }
                if answer.len() > MAX_ANSWER_BYTES {
                    return Err(too_big("the streamed answer", MAX_ANSWER_BYTES));
                }
            }
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
        }
        if !done {
            let last =
                parser.finish().map_err(|e| Error::BadResponse { service: self.service(), detail: e.to_string() })?;
            if let Some(ev) = last {
                done = self.event(&ev.data, &mut answer, on_text)?;
            }
        }
        if !done && answer.is_empty() {
            return Err(Error::BadResponse {
                service: self.service(),
                detail: "the stream ended before any text or [DONE]".into(),
            });
        }
        Ok(answer)
    }

    /// Handles one SSE `data`; returns true at `[DONE]`.
    fn event(&self, data: &str, answer: &mut String, on_text: &mut dyn FnMut(&str)) -> Result<bool> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let v: Value = serde_json::from_str(data).map_err(|e| Error::BadResponse {
            service: self.service(),
            detail: format!("a stream chunk is not JSON ({e}): {}", excerpt(data)),
        })?;
        let text = self.chunk_text(&v)?;
        if !text.is_empty() {
            answer.push_str(&text);
            on_text(&text);
        }
        Ok(false)
    }

    /// The text of a streamed chunk (`choices[0].delta.content`) or of a whole completion
    /// (`choices[0].message.content`, legacy `choices[0].text`); an `error` object is an error.
    fn chunk_text(&self, v: &Value) -> Result<String> {
        if let Some(e) = v.get("error") {
            return Err(Error::Http {
                url: self.endpoint.clone(),
                detail: format!("error in the stream: {}", error_value_text(e)),
            });
        }
        let Some(choices) = v.get("choices").and_then(|c| c.as_array()) else {
            return Err(Error::BadResponse {
                service: self.service(),
                detail: format!("no `choices` in {}", excerpt(&v.to_string())),
            });
        };
        let Some(c) = choices.first() else {
            return Ok(String::new()); // e.g. a final usage-only chunk
        };
        let text = c
            .pointer("/delta/content")
            .or_else(|| c.pointer("/message/content"))
            .or_else(|| c.get("text"))
            .and_then(|t| t.as_str())
            .unwrap_or("");
        Ok(text.to_string())
    }
}

impl Generator for OpenAiGenerator {
    fn name(&self) -> String {
        format!("remote {}", self.endpoint)
    }

    fn generate<'a>(
        &'a self,
        messages: &'a [Message],
        cfg: &'a GenerationConfig,
        cancel: &'a CancelToken,
        on_text: &'a mut dyn FnMut(&str),
    ) -> GenerateFuture<'a> {
        // the cancel check in `run` only runs when a piece arrives; this also ends the waits for the response
        // and for the first piece
        Box::pin(timer::or_cancelled(cancel, self.run(messages, cfg, cancel, on_text)))
    }
}

/// The request body: text messages (image parts become nothing: the generator's prompt is text-only).
pub fn request_body(model: &str, messages: &[Message], cfg: &GenerationConfig) -> Value {
    let msgs: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::json!({"role": m.role, "content": message_text(m).replace("<image>", "")}))
        .collect();
    let mut body = serde_json::json!({
        "model": model,
        "messages": msgs,
        "stream": true,
        "max_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
    });
    if cfg.temperature > 0.0 {
        body["top_p"] = cfg.top_p.into();
        body["seed"] = cfg.seed.into();
    }
    body
}

fn http_err(url: &str, e: reqwest::Error) -> Error {
    Error::Http { url: url.to_string(), detail: crate::error::error_chain(&e) }
}

/// `{"error":{"message","type","code"}}` (OpenAI), `{"error":"…"}` (some servers), or the body's start.
fn error_text(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) if v.get("error").is_some() => error_value_text(&v["error"]),
        _ => excerpt(&String::from_utf8_lossy(bytes)),
    }
}

fn error_value_text(e: &Value) -> String {
    match e {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let msg = o.get("message").and_then(|m| m.as_str()).unwrap_or("(no message)");
            match o.get("type").or_else(|| o.get("code")).filter(|t| !t.is_null()) {
                Some(t) => format!("{msg} ({})", t.as_str().map(String::from).unwrap_or_else(|| t.to_string())),
                None => msg.to_string(),
            }
        }
        other => other.to_string(),
    }
}

fn excerpt(s: &str) -> String {
    let mut e: String = s.chars().take(200).collect();
    if s.chars().count() > 200 {
        e.push('…');
    }
    e
}
