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
    /// A value the target dtype cannot hold (an f32 or bf16 weight beyond f16's ±65504 converted to f16).
    #[error("{what}: value {value} is beyond {dtype}'s range; load it as f32")]
    ValueRange { what: String, value: f32, dtype: &'static str },
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

/// An error and its sources as one line for a message: `a: b: c`. In the browser, reqwest's errors carry the
/// JS exception as `JsValue(TypeError: Failed to fetch\n<stack>)`: only its first line is kept, unwrapped, and a
/// part equal to the one before it is left out.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        let mut line = text.lines().next().unwrap_or("").trim();
        if let Some(inner) = line.strip_prefix("JsValue(") {
            line = inner.strip_suffix(')').unwrap_or(inner);
        }
        if let Some(inner) = line.strip_prefix("error sending request: JsValue(") {
            parts.push("error sending request".into());
            line = inner.strip_suffix(')').unwrap_or(inner);
        }
        if !line.is_empty() && parts.last().map(String::as_str) != Some(line) {
            parts.push(line.to_string());
        }
        cur = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_chain_joins_sources_and_drops_js_stacks() {
        let e = E("error sending request", Some(Box::new(E("connection refused", None))));
        assert_eq!(error_chain(&e), "error sending request: connection refused");
        let js = E(
            "error sending request: JsValue(TypeError: Failed to fetch\nTypeError: Failed to fetch\n    at x (a.js:1:2))",
            Some(Box::new(E("JsValue(TypeError: Failed to fetch\nTypeError: Failed to fetch\n    at x (a.js:1:2))", None))),
        );
        assert_eq!(error_chain(&js), "error sending request: TypeError: Failed to fetch");
    }
}
