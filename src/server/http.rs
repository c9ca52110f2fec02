//! HTTP surface of the embedded server: `search/v1` routes, static files, CORS and security headers, JSON errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::index::{SearchIndex, ENGINE};
use super::static_files::{mime_for, StaticError, StaticRoots};
use crate::retrieval::{
    ErrorBody, HealthResponse, SearchFilters, SearchRequest, SearchResponse, DEFAULT_TOP_K, MAX_QUERY_CHARS, MAX_TOP_K,
};

/// Everything a request handler needs; shared behind an `Arc`.
pub struct AppState {
    pub index: Arc<SearchIndex>,
    pub roots: StaticRoots,
    /// Origins allowed cross-origin access (exact `scheme://host[:port]` strings, or `*`). Empty: same-origin only.
    pub cors_origins: Vec<String>,
    /// Value of the `Content-Security-Policy` header.
    pub csp: HeaderValue,
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive (`POST /v1/search`, `POST /v1/chat/completions`); then 408.
    pub body_timeout: Duration,
    /// The engine behind `/v1/chat/completions`, when the server was started with a model.
    pub chat: Option<Arc<super::chat::ChatService>>,
}

/// A JSON error response `{"error":{"code","message"}}`.
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, body: ErrorBody::new(code, message) }
    }
    fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("nothing at {path}; the API is GET/POST /v1/search and GET /v1/health"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The complete router, with CORS and security headers applied to every response.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/search", get(search_get).post(search_post))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .fallback(static_file)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), headers_and_cors))
        .with_state(state)
}

async fn health(State(s): State<Arc<AppState>>) -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok".into(), engine: ENGINE.into(), documents: s.index.num_docs() })
}

#[derive(Deserialize)]
struct GetParams {
    q: Option<String>,
    k: Option<String>,
    source: Option<String>,
}

async fn search_get(
    State(s): State<Arc<AppState>>,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("bad_request", format!("bad query string: {e}")))?;
    let query = p.q.ok_or_else(|| ApiError::bad_request("missing_query", "pass the query as ?q=TEXT"))?;
    let k = match p.k.as_deref() {
        None | Some("") => DEFAULT_TOP_K,
        Some(k) => k.parse().map_err(|_| {
            ApiError::bad_request(
                "top_k_out_of_range",
                format!("k must be an integer from 1 to {MAX_TOP_K}, got {k:?}"),
            )
        })?,
    };
    let filters = p.source.map(|source| SearchFilters { source: Some(source) });
    run_search(&s, SearchRequest { query, top_k: k, filters }).await
}

/// The 408 message for a body that did not arrive within `timeout`.
fn body_timeout_message(timeout: Duration) -> String {
    format!("the request body did not arrive within {} ms", timeout.as_millis())
}

async fn search_post(State(s): State<Arc<AppState>>, req: Request) -> Result<Json<SearchResponse>, ApiError> {
    let read = tokio::time::timeout(s.body_timeout, axum::body::to_bytes(req.into_body(), s.max_body_bytes));
    let read = read.await.map_err(|_| {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", body_timeout_message(s.body_timeout))
    })?;
    let bytes = read.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the request body exceeds {} bytes; send {{\"query\",\"top_k\",\"filters\"}} only",
                s.max_body_bytes
            ),
        )
    })?;
    let request: SearchRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("expected {{\"query\": string, \"top_k\"?: 1..={MAX_TOP_K}, \"filters\"?: {{\"source\"?}}}}: {e}"),
        )
    })?;
    run_search(&s, request).await
}

async fn run_search(s: &Arc<AppState>, req: SearchRequest) -> Result<Json<SearchResponse>, ApiError> {
    let chars = req.query.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(
            "query_too_long",
            format!("the query has {chars} characters; the limit is {MAX_QUERY_CHARS}"),
        ));
    }
    if req.query.trim().is_empty() {
        return Err(ApiError::bad_request("missing_query", "the query is empty"));
    }
    if req.top_k == 0 || req.top_k > MAX_TOP_K {
        return Err(ApiError::bad_request(
            "top_k_out_of_range",
            format!("top_k must be from 1 to {MAX_TOP_K}, got {}", req.top_k),
        ));
    }
    let started = Instant::now();
    let index = s.index.clone();
    let SearchRequest { query, top_k, filters } = req;
    let (query, outcome) = tokio::task::spawn_blocking(move || {
        let r = index.search(&query, top_k, filters.as_ref());
        (query, r)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("search task failed: {e}")))?;
    let outcome = outcome.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(SearchResponse {
        query,
        engine: ENGINE.into(),
        took_ms: started.elapsed().as_secs_f64() * 1e3,
        total: outcome.total,
        results: outcome.hits,
    }))
}

fn no_model() -> Response {
    super::chat::openai_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "this server has no model; start webvlm-server with --model PATH to serve chat completions",
    )
}

async fn chat_completions(State(s): State<Arc<AppState>>, req: Request) -> Response {
    let Some(chat) = s.chat.clone() else {
        return no_model();
    };
    // the queue first: a full one answers 429 before reading up to MAX_CHAT_BODY_BYTES; the slot is held while
    // the body arrives (bounded by `body_timeout`), so slow uploads count against the queue too
    let Some(slot) = chat.admit() else {
        return super::chat::busy(&chat);
    };
    let read =
        tokio::time::timeout(s.body_timeout, axum::body::to_bytes(req.into_body(), super::chat::MAX_CHAT_BODY_BYTES));
    match read.await {
        Ok(Ok(bytes)) => super::chat::completions_admitted(chat, slot, bytes).await,
        Err(_) => super::chat::openai_error(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            body_timeout_message(s.body_timeout),
        ),
        Ok(Err(_)) => super::chat::openai_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body exceeds {} bytes", super::chat::MAX_CHAT_BODY_BYTES),
        ),
    }
}

async fn list_models(State(s): State<Arc<AppState>>) -> Response {
    match &s.chat {
        Some(chat) => super::chat::models(chat),
        None => no_model(),
    }
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{method} is not allowed here"))
}

async fn static_file(State(s): State<Arc<AppState>>, method: Method, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    if path == "/v1" || path.starts_with("/v1/") {
        return Err(ApiError::not_found(&path));
    }
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on static files"),
        ));
    }
    let file = s.roots.resolve(&path).map_err(|e| match e {
        StaticError::BadPath(why) => ApiError::bad_request("bad_path", why),
        StaticError::NotFound => ApiError::not_found(&path),
    })?;
    // streamed, never read whole: `/models/` holds multi-GB weights; HEAD only needs the length
    let f = tokio::fs::File::open(&file).await.map_err(|_| ApiError::not_found(&path))?;
    let len = f.metadata().await.map_err(|_| ApiError::not_found(&path))?.len();
    let body = if method == Method::HEAD { Body::empty() } else { file_body(f, len) };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime_for(&file))),
            (header::CONTENT_LENGTH, HeaderValue::from(len)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response())
}

/// Size of the pieces a static file is streamed in.
const FILE_CHUNK_BYTES: usize = 256 * 1024;

/// `f`'s first `len` bytes (its length when opened) as a streamed body, one [`FILE_CHUNK_BYTES`] read at a time.
/// A read error ends the body with an error (the client sees a cut response, as the length was already sent).
fn file_body(f: tokio::fs::File, len: u64) -> Body {
    use tokio::io::AsyncReadExt;
    let stream = futures_util::stream::try_unfold((f, len), |(mut f, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; FILE_CHUNK_BYTES.min(left.try_into().unwrap_or(usize::MAX))];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while being sent"));
        }
        buf.truncate(n);
        Ok(Some((axum::body::Bytes::from(buf), (f, left - n as u64))))
    });
    Body::from_stream(stream)
}

/// The allowed origin to echo for this request, if any.
fn allowed_origin(s: &AppState, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    if s.cors_origins.iter().any(|o| o == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    let o = origin.to_str().ok()?;
    s.cors_origins.iter().any(|a| a.eq_ignore_ascii_case(o)).then(|| origin.clone())
}

/// CORS (allowlist; preflights answered here) and security headers on every response.
async fn headers_and_cors(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let allowed = allowed_origin(&s, req.headers());
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut res = if preflight {
        match &allowed {
            Some(_) => {
                let mut r = StatusCode::NO_CONTENT.into_response();
                let h = r.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type, authorization"));
                h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
                r
            }
            None => ApiError::new(
                StatusCode::FORBIDDEN,
                "cors_forbidden",
                "this origin is not in the server's --cors-origin list",
            )
            .into_response(),
        }
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    if let Some(origin) = allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    if !s.cors_origins.is_empty() {
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, s.csp.clone());
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}
