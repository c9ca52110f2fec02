//! `webvlm-server`: the embedded `search/v1` retrieval server (BM25 over a JSONL corpus) that also serves the demo
//! page same-origin. All logic lives in `webvlm::server`; this is the CLI.
//!
//! With `--model PATH` (a repo directory or a GGUF file, `--mmproj` for a GGUF vision projector) it also serves
//! that model as an OpenAI-compatible `POST /v1/chat/completions` (SSE streaming), so one process can be both the
//! retrieval server and the pipeline's remote generator (`webvlm ask --search URL --generator URL`).
//!
//! ```text
//! webvlm-server --corpus data/corpus.jsonl --port 8080 --host 127.0.0.1 --www www --pkg pkg --models models
//! ```

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::path::PathBuf;

    use clap::Parser;
    use webvlm::server::chat::ChatService;
    use webvlm::server::{shutdown_signal, Server, ServerConfig, DEFAULT_MAX_BODY_BYTES};

    #[derive(Parser, Debug)]
    #[command(name = "webvlm-server", version, about = "search/v1 retrieval server (tantivy BM25) + demo page")]
    struct Cli {
        /// JSONL corpus to index at start: one {"id","title","url","text","source"?} object per line.
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Keep the index in this directory (opened if it exists) instead of RAM.
        #[arg(long)]
        index_dir: Option<PathBuf>,
        /// Rebuild an existing --index-dir from --corpus.
        #[arg(long)]
        reindex: bool,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Directory served at / (the demo page).
        #[arg(long, default_value = "www")]
        www: PathBuf,
        /// Directory served at /pkg/ (wasm-pack output).
        #[arg(long, default_value = "pkg")]
        pkg: PathBuf,
        /// Directory served at /models/ (model files for the demo's offline default, e.g. `models`).
        #[arg(long)]
        models: Option<PathBuf>,
        /// Origin allowed cross-origin access, e.g. http://localhost:5173 (repeatable; `*` allows any).
        /// Default: none, same-origin only.
        #[arg(long = "cors-origin")]
        cors_origins: Vec<String>,
        /// Extra CSP connect-src source for the page, e.g. https://huggingface.co (repeatable).
        #[arg(long = "connect-src")]
        connect_src: Vec<String>,
        /// Largest accepted request body, in bytes.
        #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
        max_body_bytes: usize,
        /// Serve this model (repo directory or GGUF file) at /v1/chat/completions (OpenAI-compatible, SSE).
        #[arg(long)]
        model: Option<PathBuf>,
        /// GGUF vision projector for a GGUF --model.
        #[arg(long)]
        mmproj: Option<PathBuf>,
        /// Weight dtype of --model on the GPU: auto, f32, f16, bf16, q8_0, q4_0, q4_1.
        #[arg(long, default_value = "auto")]
        dtype: String,
        /// KV-cache context of --model.
        #[arg(long, default_value_t = 4096)]
        context: usize,
        /// Chat requests that may wait or run at once on --model; more are refused with 429 + Retry-After.
        #[arg(long, default_value_t = webvlm::server::chat::DEFAULT_MAX_PENDING)]
        max_pending: usize,
    }

    /// Loads `--model` on the engine thread of a [`ChatService`].
    fn start_chat(cli: &Cli) -> webvlm::Result<Option<std::sync::Arc<ChatService>>> {
        use webvlm::engine::Engine;
        use webvlm::gpu::{GpuContext, GpuOptions};
        use webvlm::loader::FileSource;
        use webvlm::models::{parse_dtype, DirFiles};
        use webvlm::nn::LoadOptions;
        let Some(model) = cli.model.clone() else {
            if cli.mmproj.is_some() {
                return Err(webvlm::Error::Config("--mmproj needs --model".into()));
            }
            return Ok(None);
        };
        let (mmproj, context) = (cli.mmproj.clone(), cli.context);
        let opts = LoadOptions { dtype: parse_dtype(&cli.dtype)?, ..Default::default() };
        let name = model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        eprintln!("loading {} …", model.display());
        let service = ChatService::start_with_limit(name, cli.max_pending, move || {
            let ctx = GpuContext::new_blocking(GpuOptions::default())?;
            eprintln!("GPU: {} ({})", ctx.caps.adapter_name, ctx.caps.backend);
            if model.is_dir() {
                if mmproj.is_some() {
                    return Err(webvlm::Error::Config("--mmproj is for GGUF models".into()));
                }
                Engine::load_hf(ctx, &DirFiles(model), opts, context)
            } else {
                let mm = match &mmproj {
                    Some(p) => Some(Box::new(FileSource::open(p)?) as Box<dyn webvlm::loader::WeightSource>),
                    None => None,
                };
                Engine::load_gguf(ctx, Box::new(FileSource::open(&model)?), mm, opts, context)
            }
        })?;
        eprintln!("serving {} at /v1/chat/completions", service.model);
        Ok(Some(service))
    }

    pub fn main() -> std::process::ExitCode {
        let cli = Cli::parse();
        let rt = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the tokio runtime: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let chat = match start_chat(&cli) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let config = ServerConfig {
            corpus: cli.corpus,
            index_dir: cli.index_dir,
            reindex: cli.reindex,
            host: cli.host,
            port: cli.port,
            www: Some(cli.www),
            pkg: Some(cli.pkg),
            models: cli.models,
            cors_origins: cli.cors_origins,
            connect_src: cli.connect_src,
            max_body_bytes: cli.max_body_bytes,
            chat,
        };
        let result = rt.block_on(async {
            let server = Server::bind(config).await?;
            if let Some(r) = server.corpus_report() {
                eprintln!(
                    "corpus: {} lines, {} indexed, {} skipped (invalid UTF-8 {}, invalid JSON {}, too long {}, \
                     missing fields {}, duplicate ids {}), {} truncated, {} non-web URLs dropped",
                    r.lines,
                    r.accepted,
                    r.skipped(),
                    r.invalid_utf8,
                    r.invalid_json,
                    r.too_long,
                    r.missing_fields,
                    r.duplicate_ids,
                    r.truncated,
                    r.dropped_urls
                );
            }
            eprintln!("{} documents; listening on http://{}", server.documents(), server.local_addr());
            server.run(shutdown_signal()).await
        });
        match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    native::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
