//! The `webvlm` CLI's argument checks, through the binary: `eval`, `bench` (and for token counts `run`, `ask`,
//! `vqa`) refuse what their arguments alone decide (k out of range, --limit 0, no tokens to generate or no
//! context, a blank question, a missing image, sizes that would overflow) with a clear message and a non-zero
//! exit before any GPU or model work, leaving --out as it was; a size the adapter cannot
//! bind is refused before bench's timed runs; and an eval that fails part way leaves its records and no summary or
//! report of the previous run beside them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn webvlm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_webvlm")).args(args).output().expect("running webvlm")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The run failed, and before it opened a GPU (`load_engine` prints "GPU: …" once it has one) or panicked.
fn refused_early(o: &Output, what: &str) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "{what}: exit {:?}, stderr:\n{err}", o.status);
    assert!(!err.contains("GPU:"), "{what}: refused only after opening the GPU:\n{err}");
    assert!(!err.contains("panicked"), "{what}: panicked:\n{err}");
    err
}

/// A fresh directory under the target's tmp: `items.jsonl` (one JSON object a line), `images/cat.png`, and `out/`
/// holding a previous run's records, summary and report.
fn eval_dir(name: &str, items: &[serde_json::Value]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_args").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("tests/fixtures/images/chelsea.png"), dir.join("images/cat.png")).unwrap();
    let lines: Vec<String> = items.iter().map(|v| v.to_string()).collect();
    std::fs::write(dir.join("items.jsonl"), lines.join("\n") + "\n").unwrap();
    for (f, text) in PREVIOUS {
        std::fs::write(dir.join("out").join(f), text).unwrap();
    }
    dir
}

const PREVIOUS: [(&str, &str); 3] = [
    ("records.jsonl", "{\"id\":\"previous\"}\n"),
    ("summary.json", "{\"n\":1}"),
    ("report.html", "<h1>previous run</h1>"),
];

fn item(id: &str, image: &str, question: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "image": image, "question": question, "answers": ["cat"], "gold_doc_ids": ["d1"]})
}

/// `webvlm eval` on `dir`'s items with a model path that does not exist (the checks under test come first).
fn eval(dir: &Path, extra: &[&str]) -> Output {
    let items = dir.join("items.jsonl");
    let out = dir.join("out");
    let mut args = vec![
        "eval",
        "--items",
        items.to_str().unwrap(),
        "--model",
        "/nonexistent/model.gguf",
        "--search",
        "http://127.0.0.1:9",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    webvlm(&args)
}

fn assert_previous_outputs_intact(dir: &Path) {
    for (f, text) in PREVIOUS {
        let got = std::fs::read_to_string(dir.join("out").join(f)).unwrap_or_default();
        assert_eq!(got, text, "out/{f} of the previous run was changed by a refused run");
    }
}

#[test]
fn k_out_of_range_is_refused_before_the_model_loads() {
    let dir = eval_dir("k", &[item("a", "images/cat.png", "What animal is this?")]);
    for k in ["0", "51"] {
        let o = eval(&dir, &["--k", k]);
        let err = refused_early(&o, &format!("eval --k {k}"));
        assert!(err.contains("--k") && err.contains("1..=50"), "eval --k {k}: unclear message:\n{err}");
        assert_previous_outputs_intact(&dir);
    }
    // `ask` takes the same k
    let o = webvlm(&["ask", "--k", "0", "--model", "/nonexistent/model.gguf", "a question"]);
    let err = refused_early(&o, "ask --k 0");
    assert!(err.contains("--k") && err.contains("1..=50"), "ask --k 0: unclear message:\n{err}");
}

#[test]
fn limit_0_is_refused_as_such() {
    let dir = eval_dir("limit", &[item("a", "images/cat.png", "What animal is this?")]);
    let o = eval(&dir, &["--limit", "0"]);
    let err = refused_early(&o, "eval --limit 0");
    assert!(err.contains("--limit") && err.contains("at least 1"), "eval --limit 0: unclear message:\n{err}");
    assert!(!err.contains("has no items"), "eval --limit 0 blames the items file:\n{err}");
    assert_previous_outputs_intact(&dir);
}

#[test]
fn zero_tokens_are_refused_before_the_model_loads() {
    let dir = eval_dir("tokens", &[item("a", "images/cat.png", "What animal is this?")]);
    for flag in ["--max-tokens", "--context"] {
        let o = eval(&dir, &[flag, "0"]);
        let err = refused_early(&o, &format!("eval {flag} 0"));
        assert!(err.contains(flag) && err.contains("at least 1"), "eval {flag} 0: unclear message:\n{err}");
        assert_previous_outputs_intact(&dir);
    }
    // the other commands that generate take the same checks
    let model = ["--model", "/nonexistent/model.gguf"];
    let cases: [(&[&str], &str); 4] = [
        (&["run", "--prompt", "hi", "--max-tokens", "0"], "--max-tokens"),
        (&["run", "--prompt", "hi", "--context", "0"], "--context"),
        (&["ask", "--max-tokens", "0", "a question"], "--max-tokens"),
        (&["vqa", "--data", "/nonexistent/vqa.jsonl", "--max-tokens", "0"], "--max-tokens"),
    ];
    for (args, flag) in cases {
        let o = webvlm(&[&args[..1], &model[..], &args[1..]].concat());
        let what = args.join(" ");
        let err = refused_early(&o, &what);
        assert!(err.contains(flag) && err.contains("at least 1"), "{what}: unclear message:\n{err}");
    }
}

#[test]
fn a_missing_model_is_refused_before_the_gpu() {
    let dir = eval_dir("model", &[item("a", "images/cat.png", "What animal is this?")]);
    let o = eval(&dir, &[]);
    let err = refused_early(&o, "eval --model /nonexistent/model.gguf");
    assert!(err.contains("--model") && err.contains("not found"), "eval with no model: unclear message:\n{err}");
    assert_previous_outputs_intact(&dir);
}

#[test]
fn bad_items_are_refused_before_the_model_loads_and_out_is_untouched() {
    let dir = eval_dir(
        "items",
        &[
            item("good", "images/cat.png", "What animal is this?"),
            item("missing", "images/dog.png", "What animal is this?"),
            item("blank", "images/cat.png", "  "),
            item("folder", "images", "What animal is this?"),
        ],
    );
    let o = eval(&dir, &[]);
    let err = refused_early(&o, "eval with bad items");
    assert!(err.contains("\"missing\"") && err.contains("dog.png"), "the missing image is not named:\n{err}");
    assert!(err.contains("\"blank\"") && err.contains("question is empty"), "the blank question is not named:\n{err}");
    assert!(err.contains("\"folder\"") && err.contains("not a file"), "the folder image is not named:\n{err}");
    assert!(!err.contains("\"good\""), "the good item is named:\n{err}");
    assert_previous_outputs_intact(&dir);
}

#[test]
fn bench_sizes_that_would_overflow_are_refused_before_the_gpu() {
    let max = u64::MAX.to_string();
    let cases: [(&str, &str, &str); 6] = [
        ("--prompt-tokens", max.as_str(), "1..=131072"),
        ("--prompt-tokens", "0", "1..=131072"),
        ("--decode-tokens", "1", "2..=131072"),
        ("--runs", max.as_str(), "1..=1000"),
        ("--copy-mib", "17592186044416", "1..=16384"),
        ("--warmup", max.as_str(), "from 0 to 100"),
    ];
    for (flag, value, expected) in cases {
        let o = webvlm(&["bench", "--model", "/nonexistent/model.gguf", flag, value]);
        let err = refused_early(&o, &format!("bench {flag} {value}"));
        assert!(err.contains(flag) && err.contains(expected), "bench {flag} {value}: unclear message:\n{err}");
    }
}

/// The tiny random Idefics3 checkpoint as a model directory (as tests/e2e/eval.test.mjs assembles it).
fn tiny_vlm(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"] {
        std::fs::copy(root.join("idefics3_engine").join(f), model.join(f)).unwrap();
    }
    std::fs::copy(root.join("idefics3/model.safetensors"), model.join("model.safetensors")).unwrap();
    model
}

/// An http URL on which nothing listens (a port just given back by the OS).
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[test]
fn an_interrupted_eval_leaves_its_records_and_no_stale_summary_or_report() {
    let items: Vec<_> =
        (0..200).map(|i| item(&format!("item-{i}"), "images/cat.png", "What animal is this?")).collect();
    let dir = eval_dir("stale", &items);
    let model = tiny_vlm(&dir);
    let (items, out) = (dir.join("items.jsonl"), dir.join("out"));
    let log = std::fs::File::create(dir.join("stderr.txt")).unwrap();
    // retrieval is down (each arm answers without sources); the run is killed once its first record is written,
    // as a crash, an out-of-memory kill or Ctrl-C would end it
    #[rustfmt::skip]
    let mut child = Command::new(env!("CARGO_BIN_EXE_webvlm"))
        .args([
            "eval", "--items", items.to_str().unwrap(), "--model", model.to_str().unwrap(), "--search", &dead_url(),
            "--max-tokens", "2", "--context", "1024", "--out", out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let records = loop {
        let records = std::fs::read_to_string(out.join("records.jsonl")).unwrap_or_default();
        if records.contains("item-0") && records.ends_with('\n') {
            break records;
        }
        let done = child.try_wait().unwrap();
        if done.is_some() || t0.elapsed().as_secs() > 300 {
            let _ = child.kill();
            let err = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
            panic!("no record of the first item (exit {done:?}, {:.0} s):\n{err}", t0.elapsed().as_secs_f64());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!records.contains("previous"), "records.jsonl still holds the previous run's records");
    for f in ["summary.json", "report.html"] {
        assert!(!out.join(f).exists(), "the previous run's out/{f} is left beside the new records");
    }
}

#[test]
fn bench_copy_size_past_the_adapter_limit_is_refused_before_the_timed_runs() {
    let info = webvlm(&["info"]);
    assert!(info.status.success(), "webvlm info: {}", stderr(&info));
    let caps: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let limit = caps["max_storage_binding"].as_u64().unwrap().min(caps["max_buffer_size"].as_u64().unwrap());
    let mib = (limit >> 20) + 1;
    if mib > 16384 {
        eprintln!("NOTICE: the adapter binds {limit} bytes, past --copy-mib's own bound; nothing to check");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_args").join("copy");
    let _ = std::fs::remove_dir_all(&dir);
    let model = tiny_vlm(&dir);
    let mib = mib.to_string();
    #[rustfmt::skip]
    let o = webvlm(&[
        "bench", "--model", model.to_str().unwrap(), "--prompt-tokens", "8", "--decode-tokens", "4", "--runs", "1",
        "--warmup", "0", "--copy-mib", &mib,
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "bench --copy-mib {mib} (adapter limit {limit} bytes) succeeded:\n{err}");
    assert!(err.contains("--copy-mib"), "bench --copy-mib {mib}: not refused as such:\n{err}");
    assert!(o.stdout.is_empty(), "bench printed a report:\n{}", String::from_utf8_lossy(&o.stdout));
}
