//! The native engine as an OpenAI-compatible endpoint: `POST /v1/chat/completions` (with `stream: true`, SSE
//! `chat.completion.chunk`s and `data: [DONE]`; without it, one `chat.completion`) and `GET /v1/models`, so one
//! `webvlm-server --model …` is both the retrieval server and the pipeline's remote generator.
//!
//! The engine lives on its own thread (native GPU readbacks block) and answers one request at a time; requests
//! queue, at most `max_pending` at once (more get `429` with `Retry-After`). Images come as `image_url` parts with `data:` URLs (base64). A client that disconnects cancels its
//! generation. Errors are OpenAI-shaped: `{"error":{"message","type","code"}}`, in the stream as a `data:` event.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::{ChatRequest, Engine};
use crate::error::{Error, Result};
use crate::generation::{CancelToken, GenerationConfig, StopReason};
use crate::processor::chat::{Content, ContentPart, Message};

/// Largest `POST /v1/chat/completions` body (images travel inline as base64).
pub const MAX_CHAT_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Largest `max_tokens` a request may ask for.
pub const MAX_CHAT_TOKENS: usize = 4096;
/// Default for how many chat requests may wait or run at once; more are refused with 429 (the engine answers one
/// at a time, so an unbounded queue would only grow latency and memory).
pub const DEFAULT_MAX_PENDING: usize = 8;

/// A counting admission gate: at most `max` holders of a [`Slot`] at once.
#[derive(Debug)]
pub struct Admission {
    pending: std::sync::atomic::AtomicUsize,
    max: usize,
}

/// Holds one place in the [`Admission`] gate until dropped.
#[derive(Debug)]
pub struct Slot(Arc<Admission>);

impl Admission {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { pending: std::sync::atomic::AtomicUsize::new(0), max })
    }

    /// A slot, or `None` when `max` are taken.
    pub fn try_enter(self: &Arc<Self>) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| Slot(self.clone()))
    }

    pub fn pending(&self) -> usize {
        self.pending.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

enum Event {
    Text(String),
    Done(Result<(StopReason, usize, usize)>),
}

struct Job {
    req: ChatRequest,
    cancel: CancelToken,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    /// Released when the worker is done with the job (answered, skipped or failed).
    _slot: Slot,
}

/// A loaded engine on its worker thread.
pub struct ChatService {
    jobs: std::sync::Mutex<std_mpsc::Sender<Job>>,
    admission: Arc<Admission>,
    /// The `model` name reported back.
    pub model: String,
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService").field("model", &self.model).finish_non_exhaustive()
    }
}

impl ChatService {
    /// Runs `load` on a new thread and serves chat requests there; returns once the engine is loaded. At most
    /// [`DEFAULT_MAX_PENDING`] requests wait or run at once (see [`ChatService::start_with_limit`]).
    pub fn start(
        model: impl Into<String>,
        load: impl FnOnce() -> Result<Engine> + Send + 'static,
    ) -> Result<Arc<Self>> {
        Self::start_with_limit(model, DEFAULT_MAX_PENDING, load)
    }

    /// [`ChatService::start`] with at most `max_pending` requests waiting or running; more get 429.
    pub fn start_with_limit(
        model: impl Into<String>,
        max_pending: usize,
        load: impl FnOnce() -> Result<Engine> + Send + 'static,
    ) -> Result<Arc<Self>> {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<()>>();
        std::thread::Builder::new()
            .name("webvlm-engine".into())
            .spawn(move || {
                let engine = match load() {
                    Ok(e) => {
                        let _ = ready_tx.send(Ok(()));
                        e
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    if job.cancel.is_cancelled() || job.events.is_closed() {
                        continue;
                    }
                    let events = job.events.clone();
                    let cancel = job.cancel.clone();
                    let mut req = job.req;
                    req.messages = crate::pipeline::adapt_messages(&engine, &req.messages);
                    let out = pollster::block_on(engine.chat(&req, &job.cancel, |s| {
                        if events.send(Event::Text(s.to_string())).is_err() {
                            cancel.cancel(); // the client went away
                        }
                    }));
                    let done =
                        out.map(|r| (r.stop, r.stats.generation.prompt_tokens, r.stats.generation.generated_tokens));
                    let _ = job.events.send(Event::Done(done));
                }
            })
            .map_err(|e| Error::Other(format!("cannot start the engine thread: {e}")))?;
        ready_rx.recv().map_err(|_| Error::Other("the engine thread died while loading".into()))??;
        Ok(Arc::new(Self {
            jobs: std::sync::Mutex::new(tx),
            admission: Admission::new(max_pending.max(1)),
            model: model.into(),
        }))
    }

    /// Requests waiting or running now.
    pub fn pending(&self) -> usize {
        self.admission.pending()
    }

    /// A place in the queue, or `None` when `max_pending` requests are waiting or running. The HTTP handler
    /// takes it before reading the (up to [`MAX_CHAT_BODY_BYTES`]) body, so a full queue costs no body reads.
    pub fn admit(&self) -> Option<Slot> {
        self.admission.try_enter()
    }

    fn submit(
        &self,
        slot: Slot,
        req: ChatRequest,
    ) -> Result<(tokio::sync::mpsc::UnboundedReceiver<Event>, CancelToken)> {
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        let cancel = CancelToken::default();
        let job = Job { req, cancel: cancel.clone(), events, _slot: slot };
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| Error::Other("the engine thread has stopped".into()))?;
        Ok((rx, cancel))
    }
}

/// Cancels the job when the response (or its stream) is dropped.
struct CancelOnDrop(CancelToken);
impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

#[derive(Deserialize)]
struct ChatBody {
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default, alias = "max_completion_tokens")]
    max_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: InContent,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InContent {
    Text(String),
    Parts(Vec<InPart>),
    Null(()),
}

impl Default for InContent {
    fn default() -> Self {
        InContent::Null(())
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InPart {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ImageUrl {
    Object { url: String },
    Plain(String),
}

/// An OpenAI-shaped error response.
pub fn openai_error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"message": message.into(), "type": kind, "code": Value::Null}});
    (status, Json(body)).into_response()
}

fn error_status(e: &Error) -> (StatusCode, &'static str) {
    match e {
        Error::Image(_) | Error::ContextOverflow { .. } | Error::Template(_) | Error::UnsupportedModel(_) => {
            (StatusCode::BAD_REQUEST, "invalid_request_error")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
    }
}

/// `data:[mime];base64,…` → bytes.
fn data_url_bytes(url: &str) -> std::result::Result<Vec<u8>, String> {
    let rest = url.strip_prefix("data:").ok_or("images must be data: URLs (this server fetches nothing)")?;
    let (meta, data) = rest.split_once(',').ok_or("a data: URL without a comma")?;
    if !meta.ends_with(";base64") {
        return Err("image data: URLs must be base64".into());
    }
    base64_decode(data).ok_or_else(|| "the image's base64 is invalid".to_string())
}

/// Standard base64 with padding (RFC 4648 §4): for `data:` URLs (the CLI sends images to chat endpoints this way).
pub fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= c.len() { T[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let trimmed = match bytes.iter().rposition(|&b| b != b'=') {
        Some(i) => &bytes[..=i],
        None => &bytes[..0],
    };
    if bytes.len() - trimmed.len() > 2 || trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    for chunk in trimmed.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let k = chunk.len() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + k]);
    }
    Some(out)
}

fn to_request(body: ChatBody) -> std::result::Result<ChatRequest, String> {
    if body.messages.is_empty() {
        return Err("`messages` is empty".into());
    }
    let mut images = Vec::new();
    let mut messages = Vec::new();
    for m in body.messages {
        let content = match m.content {
            InContent::Null(()) => Content::Text(String::new()),
            InContent::Text(t) => Content::Text(t),
            InContent::Parts(parts) => {
                let mut out = Vec::new();
                for p in parts {
                    match p {
                        InPart::Text { text } => out.push(ContentPart::Text { text }),
                        InPart::ImageUrl { image_url } => {
                            let url = match image_url {
                                ImageUrl::Object { url } | ImageUrl::Plain(url) => url,
                            };
                            images.push(data_url_bytes(&url)?);
                            out.push(ContentPart::Image {});
                        }
                    }
                }
                // the engine thread adapts the shape to the model's template (`adapt_messages`)
                Content::Parts(out)
            }
        };
        messages.push(Message { role: m.role, content });
    }
    let max = body.max_tokens.unwrap_or(512);
    if max == 0 || max > MAX_CHAT_TOKENS {
        return Err(format!("max_tokens must be from 1 to {MAX_CHAT_TOKENS}, got {max}"));
    }
    let generation = GenerationConfig {
        max_new_tokens: max,
        temperature: body.temperature.unwrap_or(0.0).max(0.0),
        top_p: body.top_p.unwrap_or(1.0),
        seed: body.seed.unwrap_or(0),
        ..Default::default()
    };
    Ok(ChatRequest { messages, images, generation })
}

fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::StopToken | StopReason::Cancelled => "stop",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The 429 answer to a request that found the queue full.
pub fn busy(service: &ChatService) -> Response {
    let mut r = openai_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
        format!("the engine is busy ({} requests waiting or running); retry later", service.pending()),
    );
    r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
    r
}

/// `POST /v1/chat/completions`.
pub async fn completions(service: Arc<ChatService>, bytes: Bytes) -> Response {
    match service.admit() {
        Some(slot) => completions_admitted(service, slot, bytes).await,
        None => busy(&service),
    }
}

/// `POST /v1/chat/completions` for a request that already holds its `slot` (see [`ChatService::admit`]).
pub async fn completions_admitted(service: Arc<ChatService>, slot: Slot, bytes: Bytes) -> Response {
    let body: ChatBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", format!("bad request body: {e}"))
        }
    };
    let stream = body.stream;
    let req = match to_request(body) {
        Ok(r) => r,
        Err(m) => return openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", m),
    };
    let (mut rx, cancel) = match service.submit(slot, req) {
        Ok(x) => x,
        Err(Error::Busy) => return busy(&service),
        Err(e) => return openai_error(StatusCode::SERVICE_UNAVAILABLE, "server_error", e.to_string()),
    };
    let guard = CancelOnDrop(cancel);
    let id = format!("chatcmpl-{:x}", now_s() ^ (std::ptr::addr_of!(guard) as u64));
    let created = now_s();
    let model = service.model.clone();
    if !stream {
        let mut text = String::new();
        let done = loop {
            match rx.recv().await {
                Some(Event::Text(t)) => text.push_str(&t),
                Some(Event::Done(d)) => break d,
                None => break Err(Error::Other("the engine thread stopped".into())),
            }
        };
        drop(guard);
        return match done {
            Ok((stop, prompt, generated)) => Json(json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish_reason(stop)}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated},
            }))
            .into_response(),
            Err(e) => {
                let (status, kind) = error_status(&e);
                openai_error(status, kind, e.to_string())
            }
        };
    }
    let chunk = move |delta: Value, finish: Option<&str>| -> Bytes {
        let v = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        Bytes::from(format!("data: {v}\n\n"))
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), None);
    let state = (rx, guard, chunk, false);
    let body = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(first) }).chain(
        futures_util::stream::unfold(state, |(mut rx, guard, chunk, finished)| async move {
            if finished {
                return None;
            }
            let (bytes, finished) = match rx.recv().await {
                Some(Event::Text(t)) => (chunk(json!({"content": t}), None), false),
                Some(Event::Done(Ok((stop, _, _)))) => {
                    let mut b = chunk(json!({}), Some(finish_reason(stop))).to_vec();
                    b.extend_from_slice(b"data: [DONE]\n\n");
                    (Bytes::from(b), true)
                }
                Some(Event::Done(Err(e))) => {
                    let (_, kind) = error_status(&e);
                    let v = json!({"error": {"message": e.to_string(), "type": kind, "code": Value::Null}});
                    (Bytes::from(format!("data: {v}\n\n")), true)
                }
                None => return None,
            };
            Some((Ok(bytes), (rx, guard, chunk, finished)))
        }),
    );
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(body))
        .into_response()
}

use futures_util::StreamExt as _;

/// `GET /v1/models`.
pub fn models(service: &ChatService) -> Response {
    Json(json!({"object": "list", "data": [{"id": service.model, "object": "model", "created": 0, "owned_by": "webvlm"}]}))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_data_urls() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a").is_none() && base64_decode("a$==").is_none());
        assert_eq!(data_url_bytes("data:image/png;base64,aGk=").unwrap(), b"hi");
        // RFC 4648 §10 test vectors, and a round trip over every byte value
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
        }
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        assert!(data_url_bytes("https://example.com/x.png").is_err());
    }

    #[test]
    fn messages_convert() {
        let body: ChatBody = serde_json::from_value(json!({
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}},
                                             {"type": "text", "text": "What is it?"}]}
            ],
            "max_tokens": 7, "stream": true
        }))
        .unwrap();
        let r = to_request(body).unwrap();
        assert_eq!(r.images, [b"hi".to_vec()]);
        assert_eq!(r.messages[0], Message::parts("system", vec![ContentPart::Text { text: "Be brief.".into() }]));
        assert_eq!(
            r.messages[1].content,
            Content::Parts(vec![ContentPart::Image {}, ContentPart::Text { text: "What is it?".into() }])
        );
        assert_eq!(r.generation.max_new_tokens, 7);
    }
}

#[cfg(test)]
mod admission_tests {
    use super::*;

    #[test]
    fn at_most_max_slots() {
        let a = Admission::new(2);
        let s1 = a.try_enter().expect("first");
        let s2 = a.try_enter().expect("second");
        assert!(a.try_enter().is_none(), "a third request must be refused");
        assert_eq!(a.pending(), 2);
        drop(s1);
        let s3 = a.try_enter().expect("a slot frees when a job is done");
        assert_eq!(a.pending(), 2);
        drop((s2, s3));
        assert_eq!(a.pending(), 0);
    }
}
