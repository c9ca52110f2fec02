//! Integration tests of the embedded `search/v1` server: each test starts one in-process on 127.0.0.1:0 and talks
//! to it over real HTTP (reqwest, or a raw TCP socket where a client would normalise the path).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webvlm::retrieval::{SearchResponse, MAX_QUERY_CHARS};
use webvlm::server::{Server, ServerConfig, ServerHandle};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/corpus.jsonl");

/// A fresh, empty directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "webvlm-server-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn corpus_docs() -> usize {
    std::fs::read_to_string(CORPUS).unwrap().lines().filter(|l| !l.trim().is_empty()).count()
}

async fn start(config: ServerConfig) -> ServerHandle {
    Server::bind(ServerConfig { port: 0, ..config }).await.expect("server starts").spawn()
}

async fn start_default() -> ServerHandle {
    start(ServerConfig { corpus: Some(CORPUS.into()), ..Default::default() }).await
}

async fn get(url: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let r = reqwest::get(url).await.expect("request");
    let (s, h) = (r.status(), r.headers().clone());
    (s, h, r.json().await.unwrap_or(Value::Null))
}

async fn search(h: &ServerHandle, q: &str, k: usize) -> SearchResponse {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/search", h.base_url()))
        .query(&[("q", q), ("k", &k.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{q}");
    r.json().await.unwrap()
}

/// Sends `GET {raw_path}` byte for byte (no client-side normalisation); returns (status, body).
async fn raw_get(h: &ServerHandle, raw_path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    s.write_all(format!("GET {raw_path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn health_reports_the_indexed_corpus() {
    let h = start_default().await;
    let (status, headers, body) = get(&format!("{}/v1/health", h.base_url())).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
    let lines = corpus_docs();
    assert_eq!(body, json!({"status": "ok", "engine": "webvlm-bm25", "documents": lines}));
    assert!((40..=80).contains(&lines));
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_document_holding_the_answer_ranks_first() {
    let h = start_default().await;
    let cases = [
        ("red octagon road sign", "stop-sign"),
        ("which sign tells drivers to halt", "stop-sign"),
        ("red circle on a white flag", "flag-of-japan"),
        ("why do zebras have stripes", "zebra"),
        ("what does a blue circle road sign with a white arrow mean", "mandatory-signs"),
        ("what is the tallest land animal", "giraffe"),
        ("green copper statue in New York harbor", "statue-of-liberty"),
        ("which fire extinguisher for an electrical fire", "fire-extinguisher"),
        ("mushroom with a red cap and white spots", "fly-agaric"),
    ];
    for (q, want) in cases {
        let r = search(&h, q, 5).await;
        let ids: Vec<&str> = r.results.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids.first().copied(), Some(want), "query {q:?} ranked {ids:?}");
        assert_eq!(r.engine, "webvlm-bm25");
        assert_eq!(r.query, q);
        assert!(r.total >= r.results.len() as u64);
        for (i, hit) in r.results.iter().enumerate() {
            assert_eq!(hit.rank, i + 1);
            assert!(!hit.snippet.is_empty() && !hit.snippet.contains('<'));
            assert!(hit.url.starts_with("https://"));
            assert_eq!(hit.source, "webvlm-corpus");
        }
        assert!(r.results.windows(2).all(|w| w[0].score >= w[1].score), "{q}: scores not descending");
    }
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn get_and_post_agree_and_filters_apply() {
    let h = start_default().await;
    let url = format!("{}/v1/search", h.base_url());
    let via_get = search(&h, "giraffe with a long neck", 3).await;
    let client = reqwest::Client::new();
    let r = client.post(&url).json(&json!({"query": "giraffe with a long neck", "top_k": 3})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let via_post: SearchResponse = r.json().await.unwrap();
    let ids = |r: &SearchResponse| r.results.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&via_get), ids(&via_post));
    assert_eq!(via_post.results.len(), 3);
    assert_eq!(via_post.results[0].id, "giraffe");

    // default top_k is 5; the source filter restricts results.
    let r: SearchResponse =
        client.post(&url).json(&json!({"query": "red"})).send().await.unwrap().json().await.unwrap();
    assert_eq!(r.results.len(), 5);
    let body = json!({"query": "red", "filters": {"source": "webvlm-corpus"}});
    let r: SearchResponse = client.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(r.results.len(), 5);
    let body = json!({"query": "red", "filters": {"source": "elsewhere"}});
    let r: SearchResponse = client.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!((r.total, r.results.len()), (0, 0));
    // A query of stop words only matches nothing, rather than failing.
    let r = search(&h, "the of and", 5).await;
    assert_eq!(r.total, 0);
    // Query syntax is not interpreted: these are plain words.
    let r = search(&h, "title:zebra AND -stripes \"(", 5).await;
    assert_eq!(r.results[0].id, "zebra");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn limits_answer_with_json_errors() {
    let h = start_default().await;
    let base = format!("{}/v1/search", h.base_url());
    for (query_string, code) in [
        ("q=red&k=51", "top_k_out_of_range"),
        ("q=red&k=0", "top_k_out_of_range"),
        ("q=red&k=many", "top_k_out_of_range"),
        ("k=5", "missing_query"),
        ("q=%20%20", "missing_query"),
    ] {
        let (status, _, body) = get(&format!("{base}?{query_string}")).await;
        assert_eq!(status, 400, "{query_string}");
        assert_error(&body, code);
    }
    let long = "a".repeat(MAX_QUERY_CHARS + 1);
    let (status, _, body) = get(&format!("{base}?q={long}&k=5")).await;
    assert_eq!(status, 400);
    assert_error(&body, "query_too_long");
    let at_limit = "é".repeat(MAX_QUERY_CHARS); // chars, not bytes, are counted
    let client = reqwest::Client::new();
    let r = client.post(&base).json(&json!({"query": at_limit})).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let r = client.post(&base).json(&json!({"query": long, "top_k": 5})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_error(&r.json().await.unwrap(), "query_too_long");
    let r = client.post(&base).json(&json!({"query": "red", "top_k": 500})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_error(&r.json().await.unwrap(), "top_k_out_of_range");
    let r = client.post(&base).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_error(&r.json().await.unwrap(), "bad_json");
    let r = client.post(&base).json(&json!({"query": "red", "filters": {"lang": "de"}})).send().await.unwrap();
    assert_eq!(r.status(), 400, "unknown filters are refused, not ignored");
    let huge = json!({"query": "red", "padding": "x".repeat(64 * 1024)});
    let r = client.post(&base).json(&huge).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_error(&r.json().await.unwrap(), "body_too_large");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn cors_echoes_only_allowed_origins() {
    let allowed = "http://localhost:5173";
    let h =
        start(ServerConfig { corpus: Some(CORPUS.into()), cors_origins: vec![allowed.into()], ..Default::default() })
            .await;
    let url = format!("{}/v1/search?q=zebra&k=1", h.base_url());
    let client = reqwest::Client::new();
    let r = client.get(&url).header("origin", allowed).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], allowed);
    assert!(r.headers().get_all("vary").iter().any(|v| v.to_str().unwrap().to_lowercase().contains("origin")));
    let r = client.get(&url).header("origin", "https://evil.example").send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/search", h.base_url()))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let r = preflight(allowed).await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], allowed);
    assert!(r.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let r = preflight("https://evil.example").await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    h.shutdown().await.unwrap();

    // Default: same-origin only, no CORS headers for anyone.
    let h = start_default().await;
    let r = client.get(format!("{}/v1/health", h.base_url())).header("origin", allowed).send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    h.shutdown().await.unwrap();
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn static_files_are_served_safely_with_security_headers() {
    let root = temp_dir("static");
    let (www, pkg) = (root.join("www"), root.join("pkg"));
    write(&www.join("index.html"), b"<!doctype html><title>demo</title>");
    write(&www.join("app.mjs"), b"export const x = 1;");
    write(&www.join("sub/index.html"), b"sub page");
    write(&pkg.join("webvlm_bg.wasm"), b"\0asm\x01\0\0\0");
    write(&pkg.join("webvlm.js"), b"export default 1;");
    write(&root.join("secret.txt"), b"TOP-SECRET");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.join("secret.txt"), www.join("escape.txt")).unwrap();
        std::os::unix::fs::symlink(&root, www.join("escape-dir")).unwrap();
        std::os::unix::fs::symlink(www.join("app.mjs"), www.join("inside.mjs")).unwrap();
    }
    let h = start(ServerConfig {
        corpus: Some(CORPUS.into()),
        www: Some(www.clone()),
        pkg: Some(pkg.clone()),
        ..Default::default()
    })
    .await;
    let client = reqwest::Client::new();
    let base = h.base_url();
    for (path, mime, body) in [
        ("/", "text/html; charset=utf-8", &b"<!doctype html><title>demo</title>"[..]),
        ("/index.html", "text/html; charset=utf-8", &b"<!doctype html><title>demo</title>"[..]),
        ("/sub/", "text/html; charset=utf-8", &b"sub page"[..]),
        ("/app.mjs", "text/javascript; charset=utf-8", &b"export const x = 1;"[..]),
        ("/pkg/webvlm_bg.wasm", "application/wasm", &b"\0asm\x01\0\0\0"[..]),
        ("/pkg/webvlm.js", "text/javascript; charset=utf-8", &b"export default 1;"[..]),
    ] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], mime, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self' 'wasm-unsafe-eval'"), "{csp}");
        assert!(csp.contains("worker-src 'self'") && !csp.contains("'unsafe-eval'"), "{csp}");
        assert_eq!(&r.bytes().await.unwrap()[..], body, "{path}");
    }
    let r = client.head(format!("{base}/pkg/webvlm_bg.wasm")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["content-length"].to_str().unwrap()), (200, "8"));

    let (status, _, body) = get(&format!("{base}/missing.js")).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");

    #[cfg(unix)]
    {
        let r = client.get(format!("{base}/inside.mjs")).send().await.unwrap();
        assert_eq!(r.status(), 200, "a symlink that stays inside the root is fine");
    }
    for attempt in [
        "/../secret.txt",
        "/pkg/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/pkg/..%2f..%2fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "//etc/passwd",
        "/%2Fetc%2Fpasswd",
        &format!("/{}", root.join("secret.txt").display()).replace("//", "/%2F"),
        "/..%5csecret.txt",
        "/escape.txt",
        "/escape-dir/secret.txt",
        "/pkg/%00",
    ] {
        let (status, body) = raw_get(&h, attempt).await;
        assert!(status == 400 || status == 404, "{attempt}: status {status}");
        assert!(!body.contains("TOP-SECRET"), "{attempt} leaked the file");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{attempt}: not JSON: {body}"));
        assert!(v["error"]["code"].is_string(), "{attempt}: {body}");
    }
    h.shutdown().await.unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let h = start_default().await;
    let (status, _, body) = get(&format!("{}/v1/nope", h.base_url())).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
    let (status, _, body) = get(&format!("{}/no/such/page", h.base_url())).await;
    assert_eq!(status, 404, "no www root configured");
    assert_error(&body, "not_found");
    let r = reqwest::Client::new().delete(format!("{}/v1/search", h.base_url())).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_error(&r.json().await.unwrap(), "method_not_allowed");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn hostile_corpus_is_indexed_safely() {
    let dir = temp_dir("hostile");
    let corpus = dir.join("hostile.jsonl");
    let mut lines: Vec<u8> = Vec::new();
    let mut line = |v: Value| {
        lines.extend_from_slice(v.to_string().as_bytes());
        lines.push(b'\n');
    };
    line(json!({"id": "xss", "title": "<script>alert('owned')</script> Lighthouse", "url": "javascript:alert(1)",
                "text": "<img src=x onerror=alert(1)> A lighthouse is a tower with a bright lamp that guides ships."}));
    line(json!({"id": "xss", "title": "Duplicate", "text": "lighthouse duplicate"}));
    line(json!({"id": "big", "title": "Big", "text": format!("lighthouse {}", "filler ".repeat(10_000))}));
    line(json!({"title": "no id", "text": "lighthouse"}));
    lines.extend_from_slice(b"{\"id\":\"bad-utf8\",\"text\":\"\xc3\x28 lighthouse\"}\n{ this is not json\n\n");
    std::fs::write(&corpus, &lines).unwrap();

    let server = Server::bind(ServerConfig { corpus: Some(corpus), port: 0, ..Default::default() }).await.unwrap();
    let report = server.corpus_report().unwrap().clone();
    assert_eq!((report.accepted, report.duplicate_ids, report.missing_fields), (2, 1, 1));
    assert_eq!((report.invalid_utf8, report.invalid_json, report.truncated, report.dropped_urls), (1, 1, 1, 1));
    let h = server.spawn();
    let r = reqwest::get(format!("{}/v1/search?q=lighthouse&k=5", h.base_url())).await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let r: SearchResponse = r.json().await.unwrap();
    assert_eq!(r.results.len(), 2);
    let xss = r.results.iter().find(|x| x.id == "xss").unwrap();
    assert_eq!(xss.title, "<script>alert('owned')</script> Lighthouse", "kept verbatim, as plain text");
    assert_eq!(xss.url, "", "javascript: URLs are dropped");
    assert_eq!(
        xss.snippet,
        "<img src=x onerror=alert(1)> A lighthouse is a tower with a bright lamp that guides ships."
    );
    let big = r.results.iter().find(|x| x.id == "big").unwrap();
    assert!(big.snippet.chars().count() < 300);
    h.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_index_directory_persists_across_restarts() {
    let dir = temp_dir("index");
    let cfg = ServerConfig { corpus: Some(CORPUS.into()), index_dir: Some(dir.join("idx")), ..Default::default() };
    let h = start(cfg.clone()).await;
    let first = search(&h, "eiffel tower paris", 3).await;
    h.shutdown().await.unwrap();
    // Reopen without the corpus: the index on disk answers the same.
    let h = start(ServerConfig { corpus: None, ..cfg.clone() }).await;
    let again = search(&h, "eiffel tower paris", 3).await;
    assert_eq!(first.results, again.results);
    assert_eq!(again.results[0].id, "eiffel-tower");
    h.shutdown().await.unwrap();
    // Reopening with the corpus does not duplicate documents; --reindex rebuilds.
    for reindex in [false, true] {
        let h = start(ServerConfig { reindex, ..cfg.clone() }).await;
        let (_, _, health) = get(&format!("{}/v1/health", h.base_url())).await;
        assert_eq!(health["documents"], json!(corpus_docs()), "reindex={reindex}");
        assert_eq!(search(&h, "eiffel tower paris", 3).await.results.len(), 3);
        h.shutdown().await.unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Static files are streamed, not read whole: a multi-GB model file answers HEAD from its metadata and GET with
/// its first bytes at once (the old code read all of it into memory first, HEAD included); a file of several
/// pieces arrives intact with its Content-Length and type.
#[tokio::test]
async fn large_static_files_are_streamed_and_head_reads_nothing() {
    use std::time::Duration;
    let root = temp_dir("big-static");
    let models = root.join("models");
    std::fs::create_dir_all(&models).unwrap();
    // sparse: no disk used, 6 GiB of zeros when read
    let huge_len: u64 = 6 << 30;
    std::fs::File::create(models.join("huge.gguf")).unwrap().set_len(huge_len).unwrap();
    let medium: Vec<u8> = (0..(1usize << 20) * 3 + 17).map(|i| (i * 31 % 251) as u8).collect();
    write(&models.join("medium.safetensors"), &medium);
    let h =
        start(ServerConfig { corpus: Some(CORPUS.into()), models: Some(models.clone()), ..Default::default() }).await;
    let client = reqwest::Client::new();
    let base = h.base_url();
    let within = Duration::from_secs(3);

    let r = tokio::time::timeout(within, client.head(format!("{base}/models/huge.gguf")).send())
        .await
        .expect("HEAD answers without reading the file")
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], huge_len.to_string().as_str());
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert!(r.bytes().await.unwrap().is_empty());

    let first = async {
        let mut r = client.get(format!("{base}/models/huge.gguf")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], huge_len.to_string().as_str());
        let piece = r.chunk().await.unwrap().expect("a first piece");
        assert!(!piece.is_empty() && piece.iter().all(|&b| b == 0));
    };
    tokio::time::timeout(within, first).await.expect("GET streams its first bytes at once");

    let r = client.get(format!("{base}/models/medium.safetensors")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], medium.len().to_string().as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), medium.as_slice());
    h.shutdown().await.unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}
