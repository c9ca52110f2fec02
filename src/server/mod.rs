//! The embedded `search/v1` retrieval server (native only): axum + tokio + tantivy BM25 over a JSONL corpus,
//! also serving the demo page (`www/` at `/`, `pkg/` at `/pkg/`) from the same origin.
//!
//! The binary `webvlm-server` is a thin CLI over [`Server`]; tests start one in-process on `127.0.0.1:0`:
//! ```no_run
//! # async fn f() -> webvlm::error::Result<()> {
//! use webvlm::server::{Server, ServerConfig};
//! let handle = Server::bind(ServerConfig { corpus: Some("data/corpus.jsonl".into()), ..Default::default() })
//!     .await?
//!     .spawn();
//! println!("listening on {}", handle.base_url());
//! handle.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod chat;
pub mod corpus;
pub mod http;
pub mod index;
pub mod static_files;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;

pub use corpus::{CorpusDoc, CorpusReport};
pub use index::SearchIndex;

use crate::error::{Error, Result};
use static_files::StaticRoots;

/// Default request-body limit for `POST /v1/search` (a query of 1024 chars fits many times over).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;
/// How long a request body may take to arrive before the server answers 408 (see [`Server::with_body_timeout`]).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// JSONL corpus to index at start.
    pub corpus: Option<PathBuf>,
    /// Persist the index here (or open an existing one). `None`: RAM index, rebuilt at every start.
    pub index_dir: Option<PathBuf>,
    /// With both `corpus` and an existing `index_dir`: empty the index and rebuild it from the corpus.
    pub reindex: bool,
    pub host: String,
    /// 0 picks a free port (see [`Server::local_addr`]).
    pub port: u16,
    pub www: Option<PathBuf>,
    pub pkg: Option<PathBuf>,
    /// Served at `/models/` (model files for the demo's offline default), if set.
    pub models: Option<PathBuf>,
    /// A loaded engine to serve as OpenAI-compatible `POST /v1/chat/completions` (see [`chat`]); with it the
    /// corpus is optional.
    pub chat: Option<Arc<chat::ChatService>>,
    /// Origins allowed cross-origin (exact `scheme://host[:port]`, or `*`). Empty: same-origin only.
    pub cors_origins: Vec<String>,
    /// Extra `connect-src` sources for the page's CSP (e.g. a remote model host or generation endpoint).
    pub connect_src: Vec<String>,
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            corpus: None,
            index_dir: None,
            reindex: false,
            host: "127.0.0.1".into(),
            port: 8080,
            www: None,
            pkg: None,
            models: None,
            chat: None,
            cors_origins: Vec::new(),
            connect_src: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The Content-Security-Policy sent with every response: same-origin everything, wasm compilation allowed
/// (`'wasm-unsafe-eval'`, not `'unsafe-eval'`), workers from our origin, no plugins, no framing.
pub fn content_security_policy(connect_src: &[String]) -> String {
    let mut connect = String::from("'self'");
    for c in connect_src {
        connect.push(' ');
        connect.push_str(c);
    }
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src {connect}; \
         img-src 'self' data: blob:; style-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

/// A bound, ready server: index built, socket listening, not yet serving.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: http::AppState,
    addr: SocketAddr,
    report: Option<CorpusReport>,
    documents: u64,
}

impl Server {
    /// Loads the corpus / opens the index, then binds `host:port`.
    pub async fn bind(config: ServerConfig) -> Result<Self> {
        let ServerConfig {
            corpus,
            index_dir,
            reindex,
            host,
            port,
            www,
            pkg,
            models,
            chat,
            cors_origins,
            connect_src,
            max_body_bytes,
        } = config;
        let has_chat = chat.is_some();
        let (index, report) = tokio::task::spawn_blocking(move || -> Result<_> {
            let loaded = corpus.as_deref().map(corpus::load_corpus).transpose()?;
            let (docs, report) = match loaded {
                Some((d, r)) => (Some(d), Some(r)),
                None => (None, None),
            };
            let index = match (&index_dir, &docs) {
                (Some(dir), _) => SearchIndex::open_or_create(dir, docs.as_deref(), reindex)?,
                (None, Some(docs)) => SearchIndex::in_ram(docs)?,
                (None, None) if has_chat => SearchIndex::in_ram(&[])?,
                (None, None) => return Err(Error::Config("give --corpus FILE.jsonl, --index-dir DIR, or both".into())),
            };
            Ok((index, report))
        })
        .await
        .map_err(|e| Error::Other(format!("index build task failed: {e}")))??;
        if let Some(r) = &report {
            if r.skipped() > 0 || r.truncated > 0 || r.dropped_urls > 0 {
                log::warn!("corpus: {} lines, {} accepted, {} skipped: {r:?}", r.lines, r.accepted, r.skipped());
            }
        }
        let csp = HeaderValue::from_str(&content_security_policy(&connect_src))
            .map_err(|_| Error::Config(format!("--connect-src values must be plain header text: {connect_src:?}")))?;
        let documents = index.num_docs();
        let state = http::AppState {
            index: Arc::new(index),
            roots: StaticRoots::new(www.as_deref(), pkg.as_deref()).with_models(models.as_deref()),
            cors_origins,
            csp,
            max_body_bytes,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            chat,
        };
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .map_err(|e| Error::Io(format!("cannot listen on {host}:{port}: {e}; pick another --port")))?;
        let addr = listener.local_addr()?;
        Ok(Self { listener, state, addr, report, documents })
    }

    /// How long a request body may take to arrive (default [`DEFAULT_BODY_TIMEOUT`]); a slower one gets 408.
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.state.body_timeout = timeout;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What happened to the corpus lines (when a corpus was read).
    pub fn corpus_report(&self) -> Option<&CorpusReport> {
        self.report.as_ref()
    }

    /// Documents in the index.
    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        axum::serve(self.listener, http::router(Arc::new(self.state)))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Error::Io(format!("server: {e}")))
    }

    /// Serves on a background tokio task (tests, embedding).
    pub fn spawn(self) -> ServerHandle {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let addr = self.addr;
        let task = tokio::spawn(self.run(async {
            let _ = rx.await;
        }));
        ServerHandle { addr, stop: Some(tx), task }
    }
}

/// A server running on a background task; dropping it stops the server too.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful shutdown: stops accepting, waits for in-flight requests.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.map_err(|e| Error::Other(format!("server task: {e}")))?
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Completes on Ctrl-C, or on SIGTERM on Unix.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    log::info!("shutting down");
}
