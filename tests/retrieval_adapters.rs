//! `RetrievalClient` against each engine's recorded responses (tests/fixtures/retrieval/), replayed by a local axum
//! server on 127.0.0.1:0 — real HTTP, real parsing — plus the embedded `search/v1` server end to end, and the
//! failure modes: closed port → `Error::Http`, garbage body → `Error::BadResponse`, slow engine → `Error::Timeout`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use webvlm::error::Error;
use webvlm::retrieval::{
    EmbedFuture, OpenSearchAuth, QueryEmbedder, RetrievalClient, RetrievalConfig, SearchFilters, SearchRequest,
};
use webvlm::server::{Server, ServerConfig};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/retrieval");
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/corpus.jsonl");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

/// What the replay server saw: (path, headers, JSON body).
type Seen = Arc<Mutex<Vec<(String, HeaderMap, Value)>>>;

fn json_response(body: String) -> Response {
    ([("content-type", "application/json")], body).into_response()
}

/// Replays `fixture` to requests whose header `header` equals `want`; 401 (engine-style JSON) otherwise.
async fn replay(seen: Seen, req: Request, header: &str, want: &str, fixture_name: &str) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    seen.lock().unwrap().push((parts.uri.path().to_string(), parts.headers.clone(), body));
    if parts.headers.get(header).and_then(|v| v.to_str().ok()) != Some(want) {
        return (
            StatusCode::UNAUTHORIZED,
            json_response(
                r#"{"message":"The provided API key is invalid.","code":"invalid_api_key","type":"auth"}"#.into(),
            ),
        )
            .into_response();
    }
    json_response(fixture(fixture_name))
}

async fn engines() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/indexes/corpus/search",
            post(|State(s): State<Seen>, r: Request| {
                replay(s, r, "authorization", "Bearer meili-key", "meilisearch_search.json")
            }),
        )
        .route(
            "/corpus/_search",
            post(|State(s): State<Seen>, r: Request| async move {
                // Accept either an Elasticsearch API key or OpenSearch basic auth (admin:secret).
                let auth = r.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let want = if auth.starts_with("Basic") { "Basic YWRtaW46c2VjcmV0" } else { "ApiKey es-key" };
                replay(s, r, "authorization", want, "opensearch_search.json").await
            }),
        )
        .route(
            "/collections/corpus/points/query",
            post(|State(s): State<Seen>, r: Request| replay(s, r, "api-key", "qdrant-key", "qdrant_query.json")),
        )
        .route("/indexes/garbage/search", post(|| async { json_response(r#"{"hits":"not a list"}"#.into()) }))
        .route(
            "/html/v1/search",
            get(|| async { ([("content-type", "text/html")], "<html><body>502 Bad Gateway</body></html>") }),
        )
        .route(
            "/slow/v1/search",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "{}"
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

#[tokio::test]
async fn meilisearch_hits_map_to_search_v1() {
    let (base, seen) = engines().await;
    let client = RetrievalClient::new(RetrievalConfig::Meilisearch {
        base_url: base.clone(),
        index: "corpus".into(),
        api_key: Some("meili-key".into()),
    })
    .unwrap();
    let r = client.search("red circle on a white flag", 3).await.unwrap();
    assert_eq!((r.engine.as_str(), r.total, r.took_ms), ("meilisearch", 11, 3.0));
    let ids: Vec<&str> = r.results.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["flag-of-japan", "flag-of-bangladesh", "42"]);
    assert_eq!(r.results[0].rank, 1);
    assert!((r.results[0].score - 0.9318).abs() < 1e-3);
    assert_eq!(r.results[0].url, "https://en.wikipedia.org/wiki/Flag_of_Japan");
    assert!(r.results[0].snippet.contains("red disc"), "{}", r.results[0].snippet);
    assert_eq!(r.results[2].source, "");
    let (path, _, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(path, "/indexes/corpus/search");
    assert_eq!(body, json!({"q": "red circle on a white flag", "limit": 3, "showRankingScore": true}));

    // Filters travel as a Meilisearch filter expression.
    let req = SearchRequest {
        filters: Some(SearchFilters { source: Some("webvlm-corpus".into()) }),
        ..SearchRequest::new("flag", 2)
    };
    client.search_with(&req).await.unwrap();
    assert_eq!(seen.lock().unwrap()[1].2["filter"], "source = 'webvlm-corpus'");

    // A wrong key is the engine's 401, reported with its message.
    let bad_key = RetrievalClient::new(RetrievalConfig::Meilisearch {
        base_url: base,
        index: "corpus".into(),
        api_key: Some("nope".into()),
    })
    .unwrap();
    match bad_key.search("flag", 3).await {
        Err(Error::Http { detail, .. }) => assert!(detail.contains("401"), "{detail}"),
        other => panic!("expected Error::Http, got {other:?}"),
    }
}

#[tokio::test]
async fn opensearch_hits_map_to_search_v1() {
    let (base, seen) = engines().await;
    for auth in [
        OpenSearchAuth::ApiKey("es-key".into()),
        OpenSearchAuth::Basic { username: "admin".into(), password: "secret".into() },
    ] {
        let client = RetrievalClient::new(RetrievalConfig::OpenSearch {
            base_url: format!("{base}/"),
            index: "corpus".into(),
            auth: Some(auth),
        })
        .unwrap();
        let r = client.search("why do zebras have stripes", 2).await.unwrap();
        assert_eq!((r.engine.as_str(), r.total, r.took_ms), ("opensearch", 24, 7.0));
        assert_eq!(r.results.len(), 2);
        assert_eq!(r.results[0].id, "zebra", "_source.id wins over _id");
        assert_eq!(r.results[1].id, "horse", "_id when _source has no id");
        assert!(r.results[1].snippet.starts_with("The horse is"), "`content` is used as text");
        assert!(r.results[0].score > r.results[1].score);
        assert_eq!(r.results[1].rank, 2);
    }
    let (_, _, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(body["size"], 2);
    assert_eq!(body["query"]["bool"]["must"]["multi_match"]["query"], "why do zebras have stripes");
}

struct FixedEmbedder;
impl QueryEmbedder for FixedEmbedder {
    fn embed<'a>(&'a self, text: &'a str) -> EmbedFuture<'a> {
        Box::pin(async move { Ok(vec![text.len() as f32, 0.5, -0.25]) })
    }
}

#[tokio::test]
async fn qdrant_needs_a_vector_and_maps_points() {
    let (base, seen) = engines().await;
    let config = RetrievalConfig::Qdrant {
        base_url: base,
        collection: "corpus".into(),
        api_key: Some("qdrant-key".into()),
        vector_name: Some("text".into()),
    };
    let plain = RetrievalClient::new(config.clone()).unwrap();
    assert!(matches!(plain.search("tallest land animal", 2).await, Err(Error::Config(_))), "no embedder, no search");

    let client = plain.with_embedder(Arc::new(FixedEmbedder));
    let r = client.search("tallest land animal", 2).await.unwrap();
    assert_eq!((r.engine.as_str(), r.total), ("qdrant", 2));
    assert!((r.took_ms - 2.134).abs() < 1e-9);
    assert_eq!(r.results[0].id, "giraffe");
    assert_eq!(r.results[1].id, "17", "numeric point id when the payload has none");
    assert!(r.results[0].snippet.contains("tallest living land animal"));
    let (_, headers, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(headers["api-key"], "qdrant-key");
    assert_eq!(body, json!({"query": [19.0, 0.5, -0.25], "limit": 2, "with_payload": true, "using": "text"}));

    let r = client.search_vector("elephants", &[1.0, 0.0, 0.0], 2).await.unwrap();
    assert_eq!(r.query, "elephants");
    assert_eq!(seen.lock().unwrap()[1].2["query"], json!([1.0, 0.0, 0.0]));
}

#[tokio::test]
async fn search_v1_against_the_embedded_server() {
    let h = Server::bind(ServerConfig { corpus: Some(CORPUS.into()), port: 0, ..Default::default() })
        .await
        .unwrap()
        .spawn();
    let client = RetrievalClient::new(RetrievalConfig::SearchV1 { base_url: h.base_url() }).unwrap();
    let r = client.search("mushroom with a red cap and white spots", 3).await.unwrap();
    assert_eq!(r.engine, "webvlm-bm25");
    assert_eq!(r.results[0].id, "fly-agaric");
    assert!(r.results.len() <= 3);
    let req = SearchRequest {
        filters: Some(SearchFilters { source: Some("nowhere".into()) }),
        ..SearchRequest::new("mushroom", 3)
    };
    assert_eq!(client.search_with(&req).await.unwrap().total, 0, "filters go by POST");
    // The server's structured 400 becomes Error::Http carrying its code and message.
    match client.search(&"x".repeat(2000), 3).await {
        Err(Error::Http { detail, .. }) => {
            assert!(detail.contains("query_too_long") && detail.contains("400"), "{detail}")
        }
        other => panic!("expected Error::Http, got {other:?}"),
    }
    assert!(matches!(client.search("x", 0).await, Err(Error::Config(_))));
    assert!(matches!(client.search("x", 51).await, Err(Error::Config(_))));
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn failures_are_typed() {
    let (base, _) = engines().await;
    // A closed port: bind, note the port, close.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let down = RetrievalClient::new(RetrievalConfig::SearchV1 { base_url: format!("http://{closed}") }).unwrap();
    match down.search("anything", 3).await {
        Err(Error::Http { url, detail }) => {
            assert!(url.contains(&closed.to_string()) && !url.contains("anything"), "url {url} (no query leaked)");
            assert!(!detail.is_empty());
        }
        other => panic!("expected Error::Http, got {other:?}"),
    }
    let html = RetrievalClient::new(RetrievalConfig::SearchV1 { base_url: format!("{base}/html") }).unwrap();
    assert!(matches!(html.search("x", 3).await, Err(Error::BadResponse { .. })));
    let garbage = RetrievalClient::new(RetrievalConfig::Meilisearch {
        base_url: base.clone(),
        index: "garbage".into(),
        api_key: None,
    })
    .unwrap();
    match garbage.search("x", 3).await {
        Err(Error::BadResponse { service, detail }) => {
            assert!(service == "meilisearch" && detail.contains("hits"), "{detail}")
        }
        other => panic!("expected Error::BadResponse, got {other:?}"),
    }
    let slow = RetrievalClient::new(RetrievalConfig::SearchV1 { base_url: format!("{base}/slow") })
        .unwrap()
        .with_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert!(matches!(slow.search("x", 3).await, Err(Error::Timeout { ms: 200, .. })));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(
        RetrievalClient::new(RetrievalConfig::SearchV1 { base_url: "not a url".into() }),
        Err(Error::Config(_))
    ));
}

#[test]
fn config_round_trips_as_tagged_json() {
    let c: RetrievalConfig =
        serde_json::from_value(json!({"kind": "open_search", "base_url": "http://localhost:9200", "index": "docs",
        "auth": {"basic": {"username": "u", "password": "p"}}}))
        .unwrap();
    assert_eq!(
        c,
        RetrievalConfig::OpenSearch {
            base_url: "http://localhost:9200".into(),
            index: "docs".into(),
            auth: Some(OpenSearchAuth::Basic { username: "u".into(), password: "p".into() })
        }
    );
    let v = serde_json::to_value(RetrievalConfig::SearchV1 { base_url: "http://127.0.0.1:8080".into() }).unwrap();
    assert_eq!(v, json!({"kind": "search_v1", "base_url": "http://127.0.0.1:8080"}));
}

/// A response body far over the client's limit is refused after reading about the limit: a padded (valid) JSON
/// answer is `Error::BadResponse` naming the limit, an endless one stops too, and a huge error body still gives
/// the status.
#[tokio::test]
async fn oversized_bodies_are_refused_at_the_limit() {
    use webvlm::retrieval::MAX_RESPONSE_BYTES;
    /// A valid `search/v1` answer padded with whitespace past the limit (a client without a limit parses it).
    fn padded() -> String {
        let mut s = String::from(r#"{"query":"q","engine":"big","took_ms":0.0,"total":0,"results":[]"#);
        s.push_str(&" ".repeat(MAX_RESPONSE_BYTES + 1024));
        s.push('}');
        s
    }
    /// `{"results":[` and then spaces forever, in 64 KiB pieces.
    fn endless(status: StatusCode) -> Response {
        let head = futures_util::stream::once(async {
            Ok::<_, std::convert::Infallible>(axum::body::Bytes::from("{\"results\":["))
        });
        let tail = futures_util::stream::repeat_with(|| Ok(axum::body::Bytes::from(vec![b' '; 64 * 1024])));
        (status, [("content-type", "application/json")], axum::body::Body::from_stream(head.chain(tail)))
            .into_response()
    }
    use futures_util::StreamExt;
    let app = Router::new()
        .route("/padded/v1/search", get(|| async { json_response(padded()) }))
        .route("/endless/v1/search", get(|| async { endless(StatusCode::OK) }))
        .route("/endless-error/v1/search", get(|| async { endless(StatusCode::BAD_GATEWAY) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = |path: &str| {
        RetrievalClient::new(RetrievalConfig::SearchV1 { base_url: format!("{base}/{path}") })
            .unwrap()
            .with_timeout(Duration::from_secs(20))
    };
    for path in ["padded", "endless"] {
        let started = std::time::Instant::now();
        match client(path).search("x", 3).await {
            Err(Error::BadResponse { service, detail }) => {
                assert_eq!(service, "search/v1");
                assert!(
                    detail.contains(&format!("exceeds the limit of {MAX_RESPONSE_BYTES} bytes")),
                    "{path}: {detail}"
                );
            }
            other => panic!("{path}: expected Error::BadResponse, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{path}: {:?}", started.elapsed());
    }
    match client("endless-error").search("x", 3).await {
        Err(Error::Http { detail, .. }) => assert!(detail.contains("502"), "{detail}"),
        other => panic!("expected Error::Http, got {other:?}"),
    }
}
