//! `loadgen`: a bounded load test for a `search/v1` server. Sends exactly `--requests` searches with
//! `--concurrency` workers (natural queries, cycled), then prints one JSON line:
//! `{"requests","concurrency","rps","p50_ms","p99_ms","errors",…}`.
//!
//! ```text
//! webvlm-server --corpus data/corpus.jsonl --port 8080 &
//! loadgen --url http://127.0.0.1:8080 --requests 20000 --concurrency 32
//! ```
//! Targets loopback addresses only, unless `--allow-remote` (never point it at hosts you do not run).

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use clap::Parser;

    const QUERIES: &[&str] = &[
        "red octagon road sign",
        "what does a blue circle road sign mean",
        "red circle on a white flag",
        "why do zebras have stripes",
        "what is the tallest land animal",
        "green copper statue in new york harbor",
        "which fire extinguisher for an electrical fire",
        "mushroom with a red cap and white spots",
        "how does a refrigerator keep food cold",
        "what are the primary colors of light",
        "yellow diamond warning sign",
        "white marble mausoleum in india",
    ];

    #[derive(Parser, Debug)]
    #[command(name = "loadgen", about = "bounded load test for a search/v1 server; prints JSON")]
    struct Cli {
        /// Base URL of the server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Total number of requests.
        #[arg(long, default_value_t = 10_000)]
        requests: usize,
        /// Concurrent workers (each keeps one request in flight).
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// top_k of every search.
        #[arg(long, default_value_t = 5)]
        k: usize,
        /// Use POST /v1/search with a JSON body instead of GET.
        #[arg(long)]
        post: bool,
        /// Stop early after this many seconds, whatever is left.
        #[arg(long, default_value_t = 120)]
        max_seconds: u64,
        /// Allow a non-loopback target.
        #[arg(long)]
        allow_remote: bool,
    }

    pub fn main() -> std::process::ExitCode {
        let cli = Cli::parse();
        let url = match reqwest::Url::parse(&cli.url) {
            Ok(u) => u,
            Err(e) => {
                eprintln!("error: --url {:?}: {e}", cli.url);
                return std::process::ExitCode::FAILURE;
            }
        };
        let host = url.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback && !cli.allow_remote {
            eprintln!("error: {url} is not a loopback address; pass --allow-remote for a server you run elsewhere");
            return std::process::ExitCode::FAILURE;
        }
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        let report = rt.block_on(run(cli));
        println!("{report}");
        std::process::ExitCode::SUCCESS
    }

    async fn run(cli: Cli) -> serde_json::Value {
        let endpoint = format!("{}/v1/search", cli.url.trim_end_matches('/'));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(cli.concurrency)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let next = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_secs(cli.max_seconds);
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..cli.concurrency.max(1) {
            let (client, next, endpoint) = (client.clone(), next.clone(), endpoint.clone());
            let (n, k, post) = (cli.requests, cli.k, cli.post);
            workers.push(tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || Instant::now() > deadline {
                        break;
                    }
                    let q = QUERIES[i % QUERIES.len()];
                    let t = Instant::now();
                    let req = if post {
                        client.post(&endpoint).json(&serde_json::json!({"query": q, "top_k": k}))
                    } else {
                        client.get(&endpoint).query(&[("q", q), ("k", &k.to_string())])
                    };
                    let ok = match req.send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                    errors += usize::from(!ok);
                }
                (lat, errors)
            }));
        }
        let (mut lat, mut errors) = (Vec::new(), 0);
        for w in workers {
            let (l, e) = w.await.expect("worker");
            lat.extend(l);
            errors += e;
        }
        let secs = started.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if lat.is_empty() {
                0.0
            } else {
                lat[((lat.len() - 1) as f64 * p).round() as usize]
            }
        };
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        serde_json::json!({
            "requests": lat.len(),
            "concurrency": cli.concurrency,
            "rps": round(lat.len() as f64 / secs),
            "p50_ms": round(pct(0.50)),
            "p99_ms": round(pct(0.99)),
            "max_ms": round(lat.last().copied().unwrap_or(0.0)),
            "errors": errors,
            "seconds": round(secs),
            "method": if cli.post { "POST" } else { "GET" },
            "k": cli.k,
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    native::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
