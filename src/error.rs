//! The one error type of the library. Every variant a user can cause says what was wrong and what to do.
//! Binaries and tests may wrap it in `anyhow`; library code returns [`Result`].

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    // ---- GPU ----------------------------------------------------------------------------------
    #[error("WebGPU is not available: {0}")]
    NoAdapter(String),
    #[error("could not open the GPU device: {0}")]
    DeviceRequest(String),
    #[error("the GPU device was lost ({0}); reload the engine")]
    DeviceLost(String),
    #[error("{what} needs {limit} ≥ {needed}, but the adapter offers {offered}; choose a smaller dtype or model")]
    LimitExceeded { what: String, limit: &'static str, needed: u64, offered: u64 },
    #[error("the adapter lacks the `{feature}` feature, needed for {what}")]
    MissingFeature { feature: &'static str, what: String },
    #[error("shader `{shader}` failed to compile: {message}")]
    Shader { shader: String, message: String },
    #[error("GPU readback failed: {0}")]
    Readback(String),
    #[error("GPU validation error: {0}")]
    GpuValidation(String),

    // ---- tensors / ops ------------------------------------------------------------------------
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("{op} does not support dtype {dtype}")]
    UnsupportedDtype { op: &'static str, dtype: String },

    // ---- model files --------------------------------------------------------------------------
    #[error("malformed {format} file: {detail}")]
    Format { format: &'static str, detail: String },
    #[error("tensor `{name}` not found in the checkpoint")]
    MissingTensor { name: String },
    #[error("tensor `{name}`: {detail}")]
    BadTensor { name: String, detail: String },
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),
    #[error("bad config: {0}")]
    Config(String),

    // ---- inputs -------------------------------------------------------------------------------
    #[error("image: {0}")]
    Image(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("the prompt has {tokens} tokens, more than the context of {context}; shorten it")]
    ContextOverflow { tokens: usize, context: usize },
    #[error("generation cancelled")]
    Cancelled,

    // ---- network / pipeline -------------------------------------------------------------------
    #[error("HTTP request to {url} failed: {detail}")]
    Http { url: String, detail: String },
    #[error("{service} returned a malformed response: {detail}")]
    BadResponse { service: String, detail: String },
    #[error("{step} timed out after {ms} ms")]
    Timeout { step: String, ms: u64 },
    #[error("busy: too many requests are waiting; retry later")]
    Busy,

    #[error("I/O: {0}")]
    Io(String),
    #[error("{0}")]
    Other(String),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}
