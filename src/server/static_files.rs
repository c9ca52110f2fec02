//! Static files for the demo page: `www/` at `/`, `pkg/` (wasm-pack output) at `/pkg/`, and optionally a model
//! directory at `/models/` (the demo's offline default weights).
//!
//! Path safety, in order: the request path is percent-decoded once (invalid UTF-8 → 400); any `.` or `..`
//! segment, empty segment (`//`, or an absolute path smuggled as `%2F…`), backslash or NUL → 400; the file is then
//! canonicalised (resolving symlinks) and must still lie inside the canonical root, else 404 — so a symlink that
//! points outside a root is never followed out of it. Only regular files are served; `/` and `dir/` map to
//! `index.html`.

use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

/// Why a path was not served.
#[derive(Debug, PartialEq, Eq)]
pub enum StaticError {
    /// The path is malformed or tries to leave its root (400).
    BadPath(&'static str),
    /// No such file inside the root (404).
    NotFound,
}

/// The roots files are served from, canonicalised at start.
#[derive(Debug, Clone, Default)]
pub struct StaticRoots {
    pub www: Option<PathBuf>,
    pub pkg: Option<PathBuf>,
    /// Served at `/models/` when set (see [`StaticRoots::with_models`]).
    pub models: Option<PathBuf>,
}

impl StaticRoots {
    /// Canonicalises the configured roots; a root that does not exist is logged and disabled.
    pub fn new(www: Option<&Path>, pkg: Option<&Path>) -> Self {
        let canon = |p: Option<&Path>| {
            p.and_then(|p| match std::fs::canonicalize(p) {
                Ok(c) if c.is_dir() => Some(c),
                _ => {
                    log::warn!("static root {} is not a directory; not serving it", p.display());
                    None
                }
            })
        };
        Self { www: canon(www), pkg: canon(pkg), models: None }
    }

    /// Also serves `dir` at `/models/` (model weights for the demo page).
    pub fn with_models(mut self, dir: Option<&Path>) -> Self {
        self.models = dir.and_then(|p| match std::fs::canonicalize(p) {
            Ok(c) if c.is_dir() => Some(c),
            _ => {
                log::warn!("models root {} is not a directory; not serving it", p.display());
                None
            }
        });
        self
    }

    /// Maps a raw (still percent-encoded) request path to a file inside a root.
    pub fn resolve(&self, raw_path: &str) -> Result<PathBuf, StaticError> {
        let (root, rel) = if raw_path == "/pkg" || raw_path.starts_with("/pkg/") {
            (self.pkg.as_ref(), raw_path.strip_prefix("/pkg").unwrap_or(""))
        } else if raw_path == "/models" || raw_path.starts_with("/models/") {
            (self.models.as_ref(), raw_path.strip_prefix("/models").unwrap_or(""))
        } else {
            (self.www.as_ref(), raw_path)
        };
        let rel = rel.strip_prefix('/').ok_or(StaticError::BadPath("the path must start with /"))?;
        let decoded = percent_decode_str(rel)
            .decode_utf8()
            .map_err(|_| StaticError::BadPath("the path is not UTF-8 after percent-decoding"))?;
        let mut rel = decoded.into_owned();
        if rel.contains(['\\', '\0']) {
            return Err(StaticError::BadPath("backslashes and NUL are not allowed in paths"));
        }
        if rel.is_empty() || rel.ends_with('/') {
            rel.push_str("index.html");
        }
        for seg in rel.split('/') {
            match seg {
                "" => return Err(StaticError::BadPath("empty path segment (// or an absolute path)")),
                "." | ".." => return Err(StaticError::BadPath("`.` and `..` segments are not allowed")),
                _ => {}
            }
        }
        let root = root.ok_or(StaticError::NotFound)?;
        let file = std::fs::canonicalize(root.join(&rel)).map_err(|_| StaticError::NotFound)?;
        if !file.starts_with(root) || !file.is_file() {
            return Err(StaticError::NotFound);
        }
        Ok(file)
    }
}

/// MIME type by file extension (what browsers need for module scripts and `WebAssembly.instantiateStreaming`).
pub fn mime_for(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "gguf" | "safetensors" => "application/octet-stream",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_malformed_paths_are_rejected_before_touching_the_disk() {
        let roots = StaticRoots { www: Some(PathBuf::from("/nonexistent-www")), pkg: None, models: None };
        for p in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/x",
            "/%2E%2E%2fetc",
            "//etc/passwd",
            "/%2Fetc%2Fpasswd",
            "/a/./b",
            "/a%5c..%5cb",
            "/a%00",
            "/%ff",
        ] {
            assert!(matches!(roots.resolve(p), Err(StaticError::BadPath(_))), "{p}");
        }
        assert_eq!(roots.resolve("/pkg/x.wasm"), Err(StaticError::NotFound));
    }

    #[test]
    fn mime_types() {
        assert_eq!(mime_for(Path::new("a/webvlm_bg.wasm")), "application/wasm");
        assert_eq!(mime_for(Path::new("m.MJS")), "text/javascript; charset=utf-8");
        assert_eq!(mime_for(Path::new("noext")), "application/octet-stream");
    }
}
