//! Retrieval: the `search/v1` protocol (DESIGN.md §4) and [`RetrievalClient`], which speaks it — or the native
//! APIs of Meilisearch, OpenSearch/Elasticsearch and Qdrant — and always answers in the `search/v1` shape.
//! Builds for both targets: natively over hyper + rustls, in the browser over `fetch`.
//!
//! ```no_run
//! # async fn f() -> webvlm::error::Result<()> {
//! use webvlm::retrieval::{RetrievalClient, RetrievalConfig};
//! let client = RetrievalClient::new(RetrievalConfig::SearchV1 { base_url: "http://127.0.0.1:8080".into() })?;
//! for hit in client.search("what does a red octagon sign mean", 5).await?.results {
//!     println!("[{}] {} — {}", hit.rank, hit.title, hit.snippet);
//! }
//! # Ok(()) }
//! ```

pub(crate) mod body;
mod client;
mod fields;
pub mod meilisearch;
pub mod opensearch;
pub mod protocol;
pub mod qdrant;
pub mod snippet;

pub use client::{
    EmbedFuture, MaybeSendSync, OpenSearchAuth, QueryEmbedder, RetrievalClient, RetrievalConfig, DEFAULT_TIMEOUT,
    MAX_RESPONSE_BYTES,
};
pub use protocol::{
    ErrorBody, ErrorDetail, HealthResponse, SearchFilters, SearchHit, SearchRequest, SearchResponse, DEFAULT_TOP_K,
    MAX_QUERY_CHARS, MAX_TOP_K,
};
pub use snippet::{make_snippet, query_terms, DEFAULT_SNIPPET_CHARS};
