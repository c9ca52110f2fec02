//! [`RetrievalClient`]: one `search(query, k)` over the project's `search/v1` servers and the adapters, natively
//! (reqwest on hyper + rustls) and in the browser (reqwest on `fetch`).
//!
//! Timeouts use reqwest's per-request timeout on both targets (on wasm32 reqwest implements it with an
//! `AbortController`); an expired timeout is [`Error::Timeout`]. A failed connection or a non-2xx status is
//! [`Error::Http`]; a 2xx body that is not the expected JSON, or a body over [`MAX_RESPONSE_BYTES`], is
//! [`Error::BadResponse`]. The timeout covers reading the body too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::{read_limited, MAX_ERROR_BODY_BYTES};
use super::protocol::{ErrorBody, SearchFilters, SearchRequest, SearchResponse, MAX_TOP_K};
use super::{meilisearch, opensearch, qdrant};
use crate::error::{Error, Result};

/// Per-request timeout unless [`RetrievalClient::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body the client reads (50 hits with long snippets are far smaller); a longer one is
/// [`Error::BadResponse`] and is not read further.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Where to search. Serialisable, so it can come from a config file or from JS (`{"kind":"meilisearch",…}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RetrievalConfig {
    /// A `search/v1` server (the embedded `webvlm-server`, or anything speaking the protocol).
    SearchV1 { base_url: String },
    Meilisearch {
        base_url: String,
        index: String,
        #[serde(default)]
        api_key: Option<String>,
    },
    /// OpenSearch or Elasticsearch `_search`.
    OpenSearch {
        base_url: String,
        index: String,
        #[serde(default)]
        auth: Option<OpenSearchAuth>,
    },
    /// Needs a [`QueryEmbedder`] (see [`RetrievalClient::with_embedder`]) or [`RetrievalClient::search_vector`].
    Qdrant {
        base_url: String,
        collection: String,
        #[serde(default)]
        api_key: Option<String>,
        /// Named vector to query (`using`); `None` for a collection with one unnamed vector.
        #[serde(default)]
        vector_name: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenSearchAuth {
    /// `Authorization: ApiKey …` (Elasticsearch API keys, base64 `id:key`).
    ApiKey(String),
    Basic {
        username: String,
        password: String,
    },
}

/// Send + Sync natively (the client's futures can move between tokio threads); nothing on wasm32, where
/// browser handles are not thread-safe.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSendSync: Send + Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + Sync + ?Sized> MaybeSendSync for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSendSync {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSendSync for T {}

/// The future an embedder returns (`Send` natively).
#[cfg(not(target_arch = "wasm32"))]
pub type EmbedFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<f32>>> + Send + 'a>>;
#[cfg(target_arch = "wasm32")]
pub type EmbedFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<f32>>> + 'a>>;

/// Turns a text query into the vector a vector engine (Qdrant) searches with. It must be the model that embedded
/// the collection; the library ships none.
pub trait QueryEmbedder: MaybeSendSync {
    fn embed<'a>(&'a self, text: &'a str) -> EmbedFuture<'a>;
}

/// Searches one configured engine and answers in the `search/v1` shape.
#[derive(Clone)]
pub struct RetrievalClient {
    config: RetrievalConfig,
    http: reqwest::Client,
    timeout: Duration,
    embedder: Option<Arc<dyn QueryEmbedder>>,
}

impl std::fmt::Debug for RetrievalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetrievalClient")
            .field("engine", &self.engine())
            .field("timeout", &self.timeout)
            .field("embedder", &self.embedder.is_some())
            .finish_non_exhaustive()
    }
}

impl RetrievalClient {
    pub fn new(config: RetrievalConfig) -> Result<Self> {
        let base = match &config {
            RetrievalConfig::SearchV1 { base_url }
            | RetrievalConfig::Meilisearch { base_url, .. }
            | RetrievalConfig::OpenSearch { base_url, .. }
            | RetrievalConfig::Qdrant { base_url, .. } => base_url,
        };
        reqwest::Url::parse(base).map_err(|e| {
            Error::Config(format!("retrieval base_url {base:?} is not a URL ({e}); e.g. http://127.0.0.1:8080"))
        })?;
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { config, http, timeout: DEFAULT_TIMEOUT, embedder: None })
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The query embedder Qdrant needs for [`search`](Self::search).
    pub fn with_embedder(mut self, embedder: Arc<dyn QueryEmbedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }

    pub fn config(&self) -> &RetrievalConfig {
        &self.config
    }

    /// The engine name its responses carry.
    pub fn engine(&self) -> &'static str {
        match self.config {
            RetrievalConfig::SearchV1 { .. } => "search/v1",
            RetrievalConfig::Meilisearch { .. } => meilisearch::ENGINE,
            RetrievalConfig::OpenSearch { .. } => opensearch::ENGINE,
            RetrievalConfig::Qdrant { .. } => qdrant::ENGINE,
        }
    }

    /// Top `k` (1..=50) documents for `query`.
    pub async fn search(&self, query: &str, k: usize) -> Result<SearchResponse> {
        self.search_with(&SearchRequest::new(query, k)).await
    }

    /// Like [`search`](Self::search), with filters.
    pub async fn search_with(&self, req: &SearchRequest) -> Result<SearchResponse> {
        check_top_k(req.top_k)?;
        let filters = req.filters.as_ref();
        match &self.config {
            RetrievalConfig::SearchV1 { base_url } => self.search_v1(base_url, req).await,
            RetrievalConfig::Meilisearch { base_url, index, api_key } => {
                let mut rb = self
                    .http
                    .post(meilisearch::url(base_url, index))
                    .json(&meilisearch::request_body(&req.query, req.top_k, filters));
                if let Some(key) = api_key {
                    rb = rb.bearer_auth(key);
                }
                let body = self.send_json(rb, meilisearch::ENGINE).await?;
                meilisearch::parse(&body, &req.query).map_err(|d| bad(meilisearch::ENGINE, d))
            }
            RetrievalConfig::OpenSearch { base_url, index, auth } => {
                let mut rb = self
                    .http
                    .post(opensearch::url(base_url, index))
                    .json(&opensearch::request_body(&req.query, req.top_k, filters));
                match auth {
                    Some(OpenSearchAuth::ApiKey(key)) => rb = rb.header("authorization", format!("ApiKey {key}")),
                    Some(OpenSearchAuth::Basic { username, password }) => rb = rb.basic_auth(username, Some(password)),
                    None => {}
                }
                let body = self.send_json(rb, opensearch::ENGINE).await?;
                opensearch::parse(&body, &req.query).map_err(|d| bad(opensearch::ENGINE, d))
            }
            RetrievalConfig::Qdrant { .. } => {
                let embedder = self.embedder.as_ref().ok_or_else(|| {
                    Error::Config(
                        "Qdrant searches by vector: give the client a QueryEmbedder (with_embedder) \
                                   for the model that embedded the collection, or call search_vector"
                            .into(),
                    )
                })?;
                let vector = embedder.embed(&req.query).await?;
                self.qdrant(&req.query, &vector, req.top_k, filters).await
            }
        }
    }

    /// Qdrant only: search with a ready query vector; `query_text` is used for snippets and echoed back.
    pub async fn search_vector(&self, query_text: &str, vector: &[f32], k: usize) -> Result<SearchResponse> {
        check_top_k(k)?;
        self.qdrant(query_text, vector, k, None).await
    }

    async fn qdrant(
        &self,
        text: &str,
        vector: &[f32],
        k: usize,
        filters: Option<&SearchFilters>,
    ) -> Result<SearchResponse> {
        let RetrievalConfig::Qdrant { base_url, collection, api_key, vector_name } = &self.config else {
            return Err(Error::Config(format!(
                "search_vector needs a Qdrant config, this client is {}",
                self.engine()
            )));
        };
        let mut rb = self.http.post(qdrant::url(base_url, collection)).json(&qdrant::request_body(
            vector,
            k,
            vector_name.as_deref(),
            filters,
        ));
        if let Some(key) = api_key {
            rb = rb.header("api-key", key);
        }
        let body = self.send_json(rb, qdrant::ENGINE).await?;
        qdrant::parse(&body, text).map_err(|d| bad(qdrant::ENGINE, d))
    }

    /// `search/v1`: GET (a CORS "simple" request, no preflight) unless filters need the POST body.
    async fn search_v1(&self, base_url: &str, req: &SearchRequest) -> Result<SearchResponse> {
        let url = format!("{}/v1/search", base_url.trim_end_matches('/'));
        let rb = if req.filters.is_some() {
            self.http.post(&url).json(req)
        } else {
            self.http.get(&url).query(&[("q", req.query.as_str()), ("k", &req.top_k.to_string())])
        };
        let body = self.send_json(rb, "search/v1").await?;
        let resp: SearchResponse =
            serde_json::from_value(body).map_err(|e| bad("search/v1", format!("not a search/v1 response: {e}")))?;
        if resp.results.len() > req.top_k {
            return Err(bad("search/v1", format!("{} results for top_k {}", resp.results.len(), req.top_k)));
        }
        Ok(resp)
    }

    /// Sends, maps transport errors and non-2xx statuses, and parses the body as JSON.
    async fn send_json(&self, rb: reqwest::RequestBuilder, service: &str) -> Result<Value> {
        let rb = rb.timeout(self.timeout).header("accept", "application/json");
        let req = rb.build().map_err(|e| Error::Config(format!("{service} request: {e}")))?;
        let url = redact(req.url());
        let resp = self.http.execute(req).await.map_err(|e| self.transport(&url, service, e))?;
        let status = resp.status();
        // an error body is only read for its message: a small limit (a longer one is cut, then fails to parse)
        let limit = if status.is_success() { MAX_RESPONSE_BYTES } else { MAX_ERROR_BODY_BYTES };
        let body = read_limited(resp, limit).await.map_err(|e| self.transport(&url, service, e))?;
        let bytes = body.bytes;
        if !status.is_success() {
            let detail = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => format!("status {status}: {} ({})", e.error.message, e.error.code),
                Err(_) => format!("status {status}: {}", excerpt(&bytes)),
            };
            return Err(Error::Http { url, detail });
        }
        if body.over_limit {
            return Err(bad(service, format!("the response body exceeds the limit of {MAX_RESPONSE_BYTES} bytes")));
        }
        serde_json::from_slice(&bytes).map_err(|e| bad(service, format!("not JSON ({e}): {}", excerpt(&bytes))))
    }

    fn transport(&self, url: &str, service: &str, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            return Error::Timeout { step: format!("retrieval ({service})"), ms: self.timeout.as_millis() as u64 };
        }
        Error::Http { url: url.to_string(), detail: crate::error::error_chain(&e) }
    }
}

fn check_top_k(k: usize) -> Result<()> {
    if k == 0 || k > MAX_TOP_K {
        return Err(Error::Config(format!("top_k must be from 1 to {MAX_TOP_K}, got {k}")));
    }
    Ok(())
}

fn bad(service: &str, detail: impl Into<String>) -> Error {
    Error::BadResponse { service: service.to_string(), detail: detail.into() }
}

/// The URL without credentials or query string (error messages must not leak keys or user queries).
fn redact(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.set_query(None);
    u.to_string()
}

/// The first 200 chars of a body, for error messages.
fn excerpt(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut e: String = s.chars().take(200).collect();
    if s.chars().count() > 200 {
        e.push('…');
    }
    e
}
