//! The answer pipeline end to end, natively: the tiny random-weight VLM engine (idefics3 fixture + the
//! `idefics3_engine` tokenizer/template/processor files), the embedded `search/v1` server in-process, and a local
//! OpenAI-compatible test server that streams SSE the hard way (chunks split mid-token and mid-line, CRLF,
//! keep-alive comments). The model's words are random: these tests check plumbing — steps, trace, prompts,
//! citations, degradation — not answer quality.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use webvlm::engine::Engine;
use webvlm::error::Error;
use webvlm::generation::{CancelToken, GenerationConfig};
use webvlm::models::MemoryFiles;
use webvlm::nn::LoadOptions;
use webvlm::pipeline::{
    Arm, Generator, OpenAiConfig, OpenAiGenerator, Pipeline, PipelineConfig, PipelineEvent, PipelineRequest,
    PipelineResult, Step, StepTimeouts,
};
use webvlm::processor::chat::Message;
use webvlm::retrieval::{RetrievalClient, RetrievalConfig};
use webvlm::server::{Server, ServerConfig, ServerHandle};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/corpus.jsonl");
/// What the test generator streams: cites [1] and [2], and [9], which no retrieval here returns.
const ANSWER: &str = "A red octagon means stop [1]. Red signs warn or forbid [2], see also [9].";
const QUESTION: &str = "What does this sign mean?";

// ---- fixtures ------------------------------------------------------------------------------------------------

/// The tiny VLM engine's files, compiled into the test (so the same code could run in a browser).
fn tiny_files() -> BTreeMap<String, Arc<Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut add = |name: &str, bytes: &[u8]| {
        files.insert(name.to_string(), Arc::new(bytes.to_vec()));
    };
    add("model.safetensors", include_bytes!("fixtures/models/idefics3/model.safetensors"));
    add("config.json", include_bytes!("fixtures/models/idefics3_engine/config.json"));
    add("tokenizer.json", include_bytes!("fixtures/models/idefics3_engine/tokenizer.json"));
    add("tokenizer_config.json", include_bytes!("fixtures/models/idefics3_engine/tokenizer_config.json"));
    add("preprocessor_config.json", include_bytes!("fixtures/models/idefics3_engine/preprocessor_config.json"));
    files
}

/// The tiny VLM engine.
async fn tiny_engine() -> Arc<Engine> {
    let ctx = common::ctx().await;
    Arc::new(Engine::load_hf(ctx, &MemoryFiles(tiny_files()), LoadOptions::default(), 2048).expect("tiny engine loads"))
}

/// A 48×40 PNG: a red disc on white.
fn test_image() -> Vec<u8> {
    let img = image::RgbImage::from_fn(48, 40, |x, y| {
        let (dx, dy) = (x as i32 - 24, y as i32 - 20);
        if dx * dx + dy * dy < 15 * 15 {
            image::Rgb([220, 20, 30])
        } else {
            image::Rgb([255, 255, 255])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn retrieval_server() -> ServerHandle {
    Server::bind(ServerConfig { corpus: Some(CORPUS.into()), port: 0, ..Default::default() })
        .await
        .expect("retrieval server starts")
        .spawn()
}

/// An address nothing listens on.
async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// The body the test generator streams for `text`: a keep-alive comment, one chunk per ~6 chars, an empty
/// `choices` usage chunk, `[DONE]`; CRLF line ends throughout.
fn sse_body(text: &str) -> Vec<u8> {
    let mut s = String::from(": keep-alive\r\n\r\n");
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(6) {
        let piece: String = piece.iter().collect();
        let chunk = json!({"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]});
        s.push_str(&format!("data: {chunk}\r\n\r\n"));
        s.push_str(":\r\n\r\n");
    }
    s.push_str("data: {\"choices\":[],\"usage\":{\"completion_tokens\":9}}\r\n\r\n");
    s.push_str("data: [DONE]\r\n\r\n");
    s.into_bytes()
}

/// Sends `bytes` in 7-byte pieces with a pause between them, so the client sees many short reads that split
/// lines, CRLFs and JSON at arbitrary points.
fn trickle(bytes: Vec<u8>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        for piece in bytes.chunks(7) {
            if tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(stream)).into_response()
}

type Seen = Arc<Mutex<Vec<Value>>>;

/// An OpenAI-compatible test server: `/ok` streams [`ANSWER`], `/error` is a 503 with an OpenAI error body,
/// `/stream-error` streams a chunk then an `{"error":…}` event, `/garbage` streams non-JSON data.
async fn generator_server() -> (String, Seen) {
    let seen: Seen = Arc::default();
    async fn ok(State(seen): State<Seen>, Json(body): Json<Value>) -> Response {
        seen.lock().unwrap().push(body);
        trickle(sse_body(ANSWER))
    }
    async fn error() -> Response {
        let body = json!({"error": {"message": "model is overloaded", "type": "server_error", "code": null}});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
    async fn stream_error() -> Response {
        let mut b = sse_body("partial ");
        b.truncate(b.len() - "data: [DONE]\r\n\r\n".len());
        b.extend_from_slice(b"data: {\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}\r\n\r\n");
        trickle(b)
    }
    async fn garbage() -> Response {
        trickle(b"data: <html>not json</html>\r\n\r\n".to_vec())
    }
    let app = Router::new()
        .route("/ok/v1/chat/completions", post(ok))
        .route("/error/v1/chat/completions", post(error))
        .route("/stream-error/v1/chat/completions", post(stream_error))
        .route("/garbage/v1/chat/completions", post(garbage))
        .with_state(seen.clone());
    (serve(app).await, seen)
}

/// Broken `search/v1` endpoints: `/slow` answers after 3 s, `/garbage` answers 200 with non-JSON.
async fn broken_search_server() -> String {
    let app = Router::new()
        .route(
            "/slow/v1/search",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Json(json!({"query": "q", "engine": "slow", "took_ms": 0.0, "total": 0, "results": []}))
            }),
        )
        .route(
            "/garbage/v1/search",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], "{\"results\": [oops") }),
        );
    serve(app).await
}

fn search(base_url: &str) -> RetrievalClient {
    RetrievalClient::new(RetrievalConfig::SearchV1 { base_url: base_url.into() }).unwrap()
}

fn remote(base_url: &str) -> Box<dyn Generator> {
    Box::new(OpenAiGenerator::new(OpenAiConfig::new(base_url)).unwrap())
}

/// Short generations (lavapipe), short retrieval timeout and backoff (the degradation tests wait on them).
fn test_config() -> PipelineConfig {
    PipelineConfig {
        caption_max_tokens: 6,
        rephrase_max_tokens: 6,
        answer: GenerationConfig { max_new_tokens: 6, ..Default::default() },
        timeouts: StepTimeouts { retrieve_ms: 500, ..Default::default() },
        retry_backoff_ms: 50,
        ..Default::default()
    }
}

/// Runs the pipeline, collecting the streamed text and the step events.
async fn ask(p: &Pipeline, req: &PipelineRequest) -> (PipelineResult, String, Vec<Step>) {
    let mut text = String::new();
    let mut steps = Vec::new();
    let r = p
        .run(req, &CancelToken::default(), |ev| match ev {
            PipelineEvent::Text(t) => text.push_str(t),
            PipelineEvent::Step(e) => steps.push(e.step),
        })
        .await
        .expect("the pipeline runs");
    (r, text, steps)
}

fn steps(r: &PipelineResult) -> Vec<Step> {
    r.trace.iter().map(|e| e.step).collect()
}

fn entry(r: &PipelineResult, step: Step) -> &webvlm::pipeline::TraceEntry {
    r.trace.iter().find(|e| e.step == step).unwrap_or_else(|| panic!("no {step} in {:#?}", r.trace))
}

const IMAGE_TOKENS: [&str; 3] = ["<image>", "<fake_token_around_image>", "<global-img>"];

// ---- tests ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_arms_run_every_step_and_cite_the_documents() {
    let engine = tiny_engine().await;
    let search_server = retrieval_server().await;
    let (gen_base, seen) = generator_server().await;
    let pipeline = Pipeline::new(PipelineConfig { top_k: 3, ..test_config() })
        .with_engine(engine)
        .with_retrieval(search(&search_server.base_url()))
        .with_generator(remote(&format!("{gen_base}/ok")));
    let image = test_image();
    let mut rephrase_inputs = Vec::new();
    for arm in [Arm::Vlm, Arm::Legacy] {
        let mut req = PipelineRequest::new(QUESTION, Some(image.clone()), arm);
        req.tags = vec!["sign".into(), "<image>".into()];
        req.ocr_text = Some("STOP".into());
        let (r, streamed, events) = ask(&pipeline, &req).await;
        let all = [Step::Caption, Step::Rephrase, Step::Retrieve, Step::Generate];
        assert_eq!(steps(&r), all, "{arm}: {:#?}", r.trace);
        assert_eq!(events, all);
        for e in &r.trace {
            assert_eq!(e.error, None, "{arm}: {e:#?}");
            assert!(e.ms >= 0.0 && e.ms < 60_000.0, "{e:?}");
        }
        assert_eq!(r.question, QUESTION);
        assert_eq!(r.arm, arm);
        assert_eq!(r.degraded, None);
        assert!(!r.query.is_empty());
        assert_eq!(entry(&r, Step::Retrieve).input, r.query);

        // the answer streamed through the callback, whole; [1] and [2] name the first two documents, [9] is ignored
        assert_eq!(r.answer, ANSWER);
        assert_eq!(streamed, ANSWER);
        assert!(!r.documents.is_empty(), "{arm}: query {:?} found nothing", r.query);
        let cited: Vec<(usize, &str)> = r.citations.iter().map(|c| (c.n, c.id.as_str())).collect();
        let expect: Vec<(usize, &str)> = [1, 2, 9]
            .into_iter()
            .filter(|&n| n <= r.documents.len())
            .map(|n| (n, r.documents[n - 1].id.as_str()))
            .collect();
        assert_eq!(cited, expect, "{arm}");
        assert_eq!(r.citations[0].url, r.documents[0].url);

        // the generator saw the numbered snippets, the question and the caption
        let body = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(body["stream"], true);
        let user = body["messages"][1]["content"].as_str().unwrap();
        assert!(user.contains(&format!("[1] {}", r.documents[0].title)), "{user}");
        if let Some(d) = r.documents.get(1) {
            assert!(user.contains(&format!("[2] {}", d.title)), "{user}");
        }
        assert!(user.contains(QUESTION), "{user}");
        assert_eq!(entry(&r, Step::Generate).via, format!("remote {gen_base}/ok/v1/chat/completions"));

        // the captioner always sees the image
        let caption = entry(&r, Step::Caption);
        assert_eq!(caption.via, "vlm");
        assert!(caption.input.contains("<image>"), "{}", caption.input);
        rephrase_inputs.push(entry(&r, Step::Rephrase).clone());

        // the result is one JSON object with the documented fields
        let v = serde_json::to_value(&r).unwrap();
        for key in ["question", "arm", "caption", "query", "documents", "answer", "citations", "degraded", "trace"] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["trace"][0]["step"], "caption");
        assert_eq!(v["arm"], arm.to_string());
    }
    // the VLM rephraser's prompt holds the image; the legacy one's holds no image token at all, but the
    // caption, tags (a hostile `<image>` tag defused) and OCR text
    let (vlm, legacy) = (&rephrase_inputs[0], &rephrase_inputs[1]);
    assert_eq!(vlm.via, "vlm");
    assert_eq!(vlm.input.matches("<image>").count(), 1, "{}", vlm.input);
    assert_eq!(legacy.via, "text");
    for t in IMAGE_TOKENS {
        assert!(!legacy.input.contains(t), "legacy rephrase prompt contains {t}: {}", legacy.input);
    }
    assert!(legacy.input.contains("Tags: sign, ‹image›") && legacy.input.contains("STOP"), "{}", legacy.input);
    search_server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_engine_answers_with_editable_prompts() {
    let engine = tiny_engine().await;
    let search_server = retrieval_server().await;
    let mut config = test_config();
    config.prompts.caption = "Name the colors.".into();
    config.prompts.source = "({n}) {title}".into();
    let pipeline = Pipeline::new(config).with_engine(engine).with_retrieval(search(&search_server.base_url()));
    let (r, streamed, _) = ask(&pipeline, &PipelineRequest::new(QUESTION, Some(test_image()), Arm::Vlm)).await;
    assert_eq!(steps(&r), [Step::Caption, Step::Rephrase, Step::Retrieve, Step::Generate], "{:#?}", r.trace);
    assert!(r.trace.iter().all(|e| e.error.is_none()), "{:#?}", r.trace);
    assert!(entry(&r, Step::Caption).input.contains("Name the colors."));
    let g = entry(&r, Step::Generate);
    assert_eq!(g.via, "local");
    // the local generator's prompt is text only, through the model's chat template
    assert!(g.input.starts_with("<|im_start|>System: "), "{}", g.input);
    for t in IMAGE_TOKENS {
        assert!(!g.input.contains(t), "{}", g.input);
    }
    if !r.documents.is_empty() {
        assert!(g.input.contains(&format!("(1) {}", r.documents[0].title)), "{}", g.input);
    }
    assert_eq!(g.output, r.answer);
    assert_eq!(streamed, r.answer);
    // random words can only cite what was retrieved
    assert!(r.citations.iter().all(|c| c.n >= 1 && c.n <= r.documents.len()));
    search_server.shutdown().await.unwrap();
}

/// A lost GPU device ends the run with `DeviceLost` (the page then disposes the engine and offers Load again)
/// rather than being recorded as a degraded step while every later local step fails the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_device_ends_the_run() {
    let engine = tiny_engine().await;
    let search_server = retrieval_server().await;
    let pipeline =
        Pipeline::new(test_config()).with_engine(engine.clone()).with_retrieval(search(&search_server.base_url()));
    engine.ctx.device.destroy();
    let r = pipeline
        .run(&PipelineRequest::new(QUESTION, Some(test_image()), Arm::Vlm), &CancelToken::default(), |_| {})
        .await;
    assert!(matches!(r, Err(Error::DeviceLost(_))), "{r:#?}");
    search_server.shutdown().await.unwrap();
}

/// Retrieval that is down, slow or malformed: the answer comes without sources, flagged, with the error traced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_retrieval_degrades_to_an_answer_without_sources() {
    let engine = tiny_engine().await;
    let (gen_base, seen) = generator_server().await;
    let broken = broken_search_server().await;
    let cases = [
        ("closed port", closed_port().await, "HTTP request"),
        ("slow", format!("{broken}/slow"), "timed out"),
        ("garbage", format!("{broken}/garbage"), "malformed"),
    ];
    for (what, url, expect) in cases {
        let pipeline = Pipeline::new(test_config())
            .with_engine(engine.clone())
            .with_retrieval(search(&url))
            .with_generator(remote(&format!("{gen_base}/ok")));
        let t0 = std::time::Instant::now();
        let (r, streamed, _) = ask(&pipeline, &PipelineRequest::new(QUESTION, Some(test_image()), Arm::Legacy)).await;
        assert!(t0.elapsed() < Duration::from_secs(20), "{what}: took {:?}", t0.elapsed());
        assert_eq!(steps(&r), [Step::Caption, Step::Rephrase, Step::Retrieve, Step::Generate], "{what}");
        let e = entry(&r, Step::Retrieve).error.clone().unwrap_or_else(|| panic!("{what}: no retrieve error"));
        assert!(e.contains(expect), "{what}: {e}");
        let degraded = r.degraded.clone().unwrap_or_else(|| panic!("{what}: not flagged"));
        assert!(degraded.contains("no sources"), "{what}: {degraded}");
        assert!(r.documents.is_empty() && r.citations.is_empty(), "{what}: [1] must not map to anything");
        assert_eq!(r.question, QUESTION);
        assert_eq!((r.answer.as_str(), streamed.as_str()), (ANSWER, ANSWER));
        let user = seen.lock().unwrap().last().unwrap()["messages"][1]["content"].as_str().unwrap().to_string();
        assert!(user.contains("No sources are available") && user.contains(QUESTION), "{what}: {user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_remote_generator_falls_back_to_the_local_engine() {
    let engine = tiny_engine().await;
    let search_server = retrieval_server().await;
    let dead = closed_port().await;
    let pipeline = Pipeline::new(test_config())
        .with_engine(engine.clone())
        .with_retrieval(search(&search_server.base_url()))
        .with_generator(remote(&dead));
    let (r, streamed, _) = ask(&pipeline, &PipelineRequest::new(QUESTION, Some(test_image()), Arm::Vlm)).await;
    assert_eq!(
        steps(&r),
        [Step::Caption, Step::Rephrase, Step::Retrieve, Step::Generate, Step::Generate],
        "{:#?}",
        r.trace
    );
    let (remote_try, local_try) = (&r.trace[3], &r.trace[4]);
    assert!(remote_try.via.starts_with("remote "), "{remote_try:?}");
    let e = remote_try.error.as_deref().unwrap();
    assert!(e.contains("HTTP request") && e.contains("after 1 retry"), "{e}");
    assert_eq!((local_try.via.as_str(), &local_try.error), ("local", &None));
    assert!(r.degraded.as_deref().unwrap().contains("the local model answered"), "{:?}", r.degraded);
    assert_eq!(r.answer, local_try.output);
    assert_eq!(streamed, r.answer);

    // without the fallback: no answer, but the question, the sources and the reason survive
    let pipeline = Pipeline::new(PipelineConfig { fallback_to_local: false, ..test_config() })
        .with_engine(engine)
        .with_retrieval(search(&search_server.base_url()))
        .with_generator(remote(&dead));
    let (r, _, _) = ask(&pipeline, &PipelineRequest::new(QUESTION, None, Arm::Legacy)).await;
    assert_eq!(steps(&r), [Step::Rephrase, Step::Retrieve, Step::Generate]);
    assert_eq!((r.question.as_str(), r.answer.as_str()), (QUESTION, ""));
    assert!(r.degraded.as_deref().unwrap().starts_with("no answer"), "{:?}", r.degraded);
    search_server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_client_parses_split_streams_and_types_error_bodies() {
    let (base, _) = generator_server().await;
    let run = |path: &str| sse_run(base.clone(), path.to_string());
    let (out, pieces) = run("ok").await;
    assert_eq!(out.unwrap(), ANSWER);
    assert_eq!(pieces.concat(), ANSWER);
    assert!(pieces.len() > 5, "{pieces:?}");

    match run("error").await.0 {
        Err(Error::Http { detail, .. }) => {
            assert!(detail.contains("503") && detail.contains("model is overloaded (server_error)"), "{detail}")
        }
        other => panic!("expected Error::Http, got {other:?}"),
    }
    match run("stream-error").await {
        (Err(Error::Http { detail, .. }), pieces) => {
            assert!(detail.contains("error in the stream: out of memory"), "{detail}");
            assert_eq!(pieces.concat(), "partial ");
        }
        other => panic!("expected Error::Http, got {:?}", other.0),
    }
    match run("garbage").await.0 {
        Err(Error::BadResponse { detail, .. }) => assert!(detail.contains("not JSON"), "{detail}"),
        other => panic!("expected Error::BadResponse, got {other:?}"),
    }
    match run("nowhere").await.0 {
        Err(Error::Http { detail, .. }) => assert!(detail.contains("404"), "{detail}"),
        other => panic!("expected Error::Http, got {other:?}"),
    }
}

async fn sse_run(base: String, path: String) -> (webvlm::Result<String>, Vec<String>) {
    let g = OpenAiGenerator::new(OpenAiConfig::new(format!("{base}/{path}"))).unwrap();
    let messages = [Message::text("user", "hi")];
    let mut pieces = Vec::new();
    let cfg = GenerationConfig::default();
    let out = g.generate(&messages, &cfg, &CancelToken::default(), &mut |s| pieces.push(s.to_string())).await;
    (out, pieces)
}

/// A stream that fails after text was shown is not replaced by the fallback (the user would see two answers):
/// the partial answer is kept and flagged as cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_breaks_midway_keeps_the_partial_answer() {
    let engine = tiny_engine().await;
    let (gen_base, _) = generator_server().await;
    let pipeline =
        Pipeline::new(test_config()).with_engine(engine).with_generator(remote(&format!("{gen_base}/stream-error")));
    let (r, streamed, _) = ask(&pipeline, &PipelineRequest::new(QUESTION, None, Arm::Vlm)).await;
    assert_eq!(steps(&r), [Step::Rephrase, Step::Generate], "{:#?}", r.trace);
    assert_eq!((r.answer.as_str(), streamed.as_str()), ("partial ", "partial "));
    assert!(r.degraded.as_deref().unwrap().contains("cut off"), "{:?}", r.degraded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_it_cannot_start_are_errors() {
    let p = Pipeline::new(test_config());
    let run = |req: PipelineRequest| {
        let p = &p;
        async move { p.run(&req, &CancelToken::default(), |_| {}).await }
    };
    assert!(matches!(run(PipelineRequest::new("  ", None, Arm::Vlm)).await, Err(Error::Config(_))));
    assert!(
        matches!(run(PipelineRequest::new("q", None, Arm::Vlm)).await, Err(Error::Config(m)) if m.contains("no generator"))
    );
    let p2 = Pipeline::new(test_config()).with_generator(remote("http://127.0.0.1:9"));
    let req = PipelineRequest { k: Some(0), ..PipelineRequest::new("q", None, Arm::Vlm) };
    assert!(matches!(p2.run(&req, &CancelToken::default(), |_| {}).await, Err(Error::Config(_))));
}

/// `webvlm-server --model`: the same process serves search/v1 and the engine as an OpenAI-compatible endpoint;
/// the pipeline's remote generator streams from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_the_engine_as_chat_completions() {
    use webvlm::gpu::{GpuContext, GpuOptions};
    let files = tiny_files();
    let chat = webvlm::server::chat::ChatService::start("tiny-idefics3", move || {
        let ctx = GpuContext::new_blocking(GpuOptions::default())?;
        Engine::load_hf(ctx, &MemoryFiles(files), LoadOptions::default(), 2048)
    })
    .expect("engine thread starts");
    let server =
        Server::bind(ServerConfig { corpus: Some(CORPUS.into()), port: 0, chat: Some(chat), ..Default::default() })
            .await
            .unwrap()
            .spawn();
    let base = server.base_url();
    let http = reqwest::Client::new();

    // the pipeline with no local model: question → search → the server's engine, streamed
    let pipeline = Pipeline::new(test_config()).with_retrieval(search(&base)).with_generator(remote(&base));
    let (r, streamed, _) = ask(&pipeline, &PipelineRequest::new("red circle flag", None, Arm::Vlm)).await;
    assert_eq!(steps(&r), [Step::Rephrase, Step::Retrieve, Step::Generate], "{:#?}", r.trace);
    assert!(r.trace.iter().all(|e| e.error.is_none()), "{:#?}", r.trace);
    assert_eq!(r.trace[0].via, "question");
    assert_eq!(r.query, "red circle flag");
    assert!(!r.documents.is_empty());
    assert_eq!(streamed, r.answer);
    assert_eq!(r.trace[2].output, r.answer); // may be empty: random weights can stop at once

    // non-streaming, with an image as a data URL; the answer equals the streamed one for the same prompt
    let png = test_image();
    let b64 = webvlm::server::chat::base64_encode(&png);
    let body = json!({
        "model": "tiny-idefics3", "max_tokens": 5,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{b64}")}},
            {"type": "text", "text": "What is this?"}]}]
    });
    let v: Value =
        http.post(format!("{base}/v1/chat/completions")).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 5, "{v}");
    let whole = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let g = OpenAiGenerator::new(OpenAiConfig::new(&base)).unwrap();
    let msgs = [Engine::user_message("What is this?", 0)];
    let text_only = g
        .generate(
            &msgs,
            &GenerationConfig { max_new_tokens: 5, ..Default::default() },
            &CancelToken::default(),
            &mut |_| {},
        )
        .await
        .unwrap();
    assert!(["stop", "length"].contains(&v["choices"][0]["finish_reason"].as_str().unwrap()), "{v}");
    let _ = (whole, text_only);

    // errors are OpenAI-shaped
    let r = http.post(format!("{base}/v1/chat/completions")).body("{").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    let v: Value = http.get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["data"][0]["id"], "tiny-idefics3");
    server.shutdown().await.unwrap();
}

// ---- robustness: cancel while waiting, bounded bodies, the chat queue before the body ----------------------

/// A generator that never answers (`/hang`: no response at all; `/silent`: 200 and SSE headers, then nothing),
/// and ones whose bodies break the client's limits: `/long-line` (2 MiB without a line end), `/long-event`
/// (3 MB of `data:` lines without a blank line), `/huge-json` (a valid completion padded past 8 MiB),
/// `/slow-error` (a 503 whose body never comes).
async fn hostile_generator_server() -> String {
    fn never() -> Body {
        Body::from_stream(futures_util::stream::pending::<Result<Bytes, Infallible>>())
    }
    async fn hang() -> Response {
        std::future::pending::<()>().await;
        unreachable!()
    }
    async fn silent() -> Response {
        ([(header::CONTENT_TYPE, "text/event-stream")], never()).into_response()
    }
    async fn long_line() -> Response {
        let mut b = b"data: ".to_vec();
        b.resize(2 * 1024 * 1024, b'x');
        ([(header::CONTENT_TYPE, "text/event-stream")], b).into_response()
    }
    async fn long_event() -> Response {
        let line = format!("data: {}\n", "y".repeat(1000));
        ([(header::CONTENT_TYPE, "text/event-stream")], line.repeat(3000)).into_response()
    }
    async fn huge_json() -> Response {
        let mut s = json!({"choices": [{"message": {"content": "hi"}}]}).to_string();
        s.insert_str(1, &" ".repeat(9 * 1024 * 1024));
        ([(header::CONTENT_TYPE, "application/json")], s).into_response()
    }
    async fn slow_error() -> Response {
        (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "application/json")], never()).into_response()
    }
    let app = Router::new()
        .route("/hang/v1/chat/completions", post(hang))
        .route("/silent/v1/chat/completions", post(silent))
        .route("/long-line/v1/chat/completions", post(long_line))
        .route("/long-event/v1/chat/completions", post(long_event))
        .route("/huge-json/v1/chat/completions", post(huge_json))
        .route("/slow-error/v1/chat/completions", post(slow_error));
    serve(app).await
}

/// Stop while the remote generator has not answered (or sent no chunk yet) ends the run at once as cancelled,
/// not at the generate timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_interrupts_a_remote_generator_that_has_not_answered() {
    let base = hostile_generator_server().await;
    for path in ["hang", "silent"] {
        let config = PipelineConfig {
            timeouts: StepTimeouts { generate_ms: 60_000, ..Default::default() },
            fallback_to_local: false,
            ..test_config()
        };
        let pipeline = Pipeline::new(config).with_generator(remote(&format!("{base}/{path}")));
        let cancel = CancelToken::default();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.cancel();
        });
        let t0 = std::time::Instant::now();
        let req = PipelineRequest::new(QUESTION, None, Arm::Vlm);
        let out = tokio::time::timeout(Duration::from_secs(10), pipeline.run(&req, &cancel, |_| {}))
            .await
            .unwrap_or_else(|_| panic!("{path}: the run ignored the cancel for 10 s"));
        assert!(matches!(out, Err(Error::Cancelled)), "{path}: {out:?}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{path}: took {:?}", t0.elapsed());

        // the generator on its own, too
        let g = OpenAiGenerator::new(OpenAiConfig::new(format!("{base}/{path}"))).unwrap();
        let cancel = CancelToken::default();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.cancel();
        });
        let (msgs, cfg) = ([Message::text("user", "hi")], GenerationConfig::default());
        let out = tokio::time::timeout(Duration::from_secs(10), g.generate(&msgs, &cfg, &cancel, &mut |_| {}))
            .await
            .unwrap_or_else(|_| panic!("{path}: the generator ignored the cancel for 10 s"));
        assert!(matches!(out, Err(Error::Cancelled)), "{path}: {out:?}");
    }
}

/// Bodies past the client's limits are `BadResponse` naming the limit (a client without limits would buffer
/// them whole, and parse the padded one); an error body that never comes does not hold the error back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_generator_bodies_are_bounded() {
    let base = hostile_generator_server().await;
    for (path, expect) in [
        ("long-line", "an SSE line exceeds the limit of 1048576 bytes"),
        ("long-event", "an SSE event exceeds the limit of 1048576 bytes"),
        ("huge-json", "exceeds the limit of 8388608 bytes"),
    ] {
        let out = tokio::time::timeout(Duration::from_secs(20), sse_run(base.clone(), path.into())).await;
        match out.unwrap_or_else(|_| panic!("{path}: no answer in 20 s")).0 {
            Err(Error::BadResponse { detail, .. }) => assert!(detail.contains(expect), "{path}: {detail}"),
            other => panic!("{path}: expected Error::BadResponse, got {other:?}"),
        }
    }
    let t0 = std::time::Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(30), sse_run(base.clone(), "slow-error".into())).await;
    match out.expect("the error body's wait is bounded").0 {
        Err(Error::Http { detail, .. }) => assert!(detail.contains("503") && detail.contains("no body"), "{detail}"),
        other => panic!("expected Error::Http, got {other:?}"),
    }
    let waited = t0.elapsed();
    let limit = Duration::from_millis(webvlm::pipeline::generator::ERROR_BODY_TIMEOUT_MS);
    assert!(waited >= limit && waited < limit + Duration::from_secs(5), "{waited:?}");
}

/// Reads the status code of the response on `s` (the first line), or panics after `within`.
async fn raw_status(s: &mut tokio::net::TcpStream, within: Duration) -> u16 {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut buf = Vec::new();
        let mut piece = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut piece).await.unwrap();
            assert!(n > 0, "the connection closed without a response");
            buf.extend_from_slice(&piece[..n]);
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap()
    };
    tokio::time::timeout(within, read).await.unwrap_or_else(|_| panic!("no response within {within:?}"))
}

/// `POST /v1/chat/completions`: a full queue answers 429 before any of the body is read, and a body that does not
/// arrive is given up after the body timeout (408), freeing its place in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_queue_is_checked_before_the_body_is_read() {
    use tokio::io::AsyncWriteExt;
    use webvlm::gpu::{GpuContext, GpuOptions};
    let files = tiny_files();
    let chat = webvlm::server::chat::ChatService::start_with_limit("tiny", 1, move || {
        let ctx = GpuContext::new_blocking(GpuOptions::default())?;
        Engine::load_hf(ctx, &MemoryFiles(files), LoadOptions::default(), 2048)
    })
    .expect("engine thread starts");
    let server = Server::bind(ServerConfig { port: 0, chat: Some(chat.clone()), ..Default::default() })
        .await
        .unwrap()
        .with_body_timeout(Duration::from_millis(1500))
        .spawn();
    let head = |len: usize| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {len}\r\n\r\n"
        )
    };
    // A: announces 1000 bytes, sends one, and so holds the only place while its body trickles
    let mut a = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    a.write_all(format!("{}{{", head(1000)).as_bytes()).await.unwrap();
    let t0 = std::time::Instant::now();
    while chat.pending() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "A never entered the queue");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // B: announces 30 MB and sends nothing: refused at once, from the headers alone
    let mut b = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    b.write_all(head(30_000_000).as_bytes()).await.unwrap();
    assert_eq!(raw_status(&mut b, Duration::from_millis(1000)).await, 429);
    // A's body never completes: 408 after the body timeout, and its place is free again
    assert_eq!(raw_status(&mut a, Duration::from_secs(5)).await, 408);
    assert!(t0.elapsed() >= Duration::from_millis(1400), "{:?}", t0.elapsed());
    let t1 = std::time::Instant::now();
    while chat.pending() != 0 {
        assert!(t1.elapsed() < Duration::from_secs(2), "A's place was not freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop((a, b));
    server.shutdown().await.unwrap();
}
