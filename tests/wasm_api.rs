//! wasm-bindgen tests of the browser bindings (`src/wasm`), in headless Chromium's WebGPU:
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test --target wasm32-unknown-unknown
//! --test wasm_api` (CHROMEDRIVER=/usr/bin/chromedriver, flags from webdriver.json).
//! The model is the tiny random Idefics3 fixture with its tokenizer (tests/fixtures/models/idefics3_engine).
#![cfg(target_arch = "wasm32")]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Array, Function, Map, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use webvlm::wasm::WebvlmEngine;

wasm_bindgen_test_configure!(run_in_browser);

const ENGINE_DIR: &[(&str, &[u8])] = &[
    ("config.json", include_bytes!("fixtures/models/idefics3_engine/config.json")),
    ("tokenizer.json", include_bytes!("fixtures/models/idefics3_engine/tokenizer.json")),
    ("tokenizer_config.json", include_bytes!("fixtures/models/idefics3_engine/tokenizer_config.json")),
    ("preprocessor_config.json", include_bytes!("fixtures/models/idefics3_engine/preprocessor_config.json")),
    ("model.safetensors", include_bytes!("fixtures/models/idefics3/model.safetensors")),
];
const IMAGE: &[u8] = include_bytes!("fixtures/images/chelsea.png");

fn files(skip: Option<&str>) -> JsValue {
    let m = Map::new();
    for (name, bytes) in ENGINE_DIR {
        if Some(*name) != skip {
            m.set(&JsValue::from_str(name), &Uint8Array::from(*bytes));
        }
    }
    m.into()
}

fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &JsValue::from_str(k), v).unwrap();
    }
    o.into()
}

fn get(o: &JsValue, k: &str) -> JsValue {
    Reflect::get(o, &JsValue::from_str(k)).unwrap()
}

fn error_name(e: &JsValue) -> String {
    get(e, "name").as_string().unwrap_or_default()
}

async fn load(progress: Option<&Function>) -> WebvlmEngine {
    let mut opts = vec![("maxContext", JsValue::from_f64(256.0))];
    if let Some(f) = progress {
        opts.push(("onProgress", f.clone().into()));
    }
    WebvlmEngine::load_files(files(None).unchecked_into(), Some(obj(&opts).unchecked_into()))
        .await
        .expect("tiny engine loads")
}

fn messages(json: &str) -> JsValue {
    js_sys::JSON::parse(json).unwrap()
}

fn abort_controller() -> JsValue {
    let ctor: Function =
        Reflect::get(&js_sys::global(), &JsValue::from_str("AbortController")).unwrap().unchecked_into();
    Reflect::construct(&ctor, &Array::new()).unwrap()
}

fn abort(ctrl: &JsValue) {
    let f: Function = get(ctrl, "abort").unchecked_into();
    f.call0(ctrl).unwrap();
}

async fn generate(
    engine: &WebvlmEngine,
    msgs: &str,
    images: Vec<Uint8Array>,
    max_tokens: f64,
    on_text: Option<Function>,
    signal: Option<JsValue>,
) -> Result<JsValue, JsValue> {
    let opts = obj(&[("maxTokens", max_tokens.into())]);
    JsFuture::from(engine.generate(
        messages(msgs).unchecked_into(),
        images,
        Some(opts.unchecked_into()),
        on_text,
        signal.map(|s| s.unchecked_into()),
    ))
    .await
}

#[wasm_bindgen_test]
async fn load_reports_progress_and_memory() {
    let calls = Rc::new(Cell::new(0u32));
    let last = Rc::new(Cell::new((0.0, 0.0)));
    let (c, l) = (calls.clone(), last.clone());
    let cb = Closure::<dyn FnMut(f64, f64)>::new(move |a, b| {
        c.set(c.get() + 1);
        l.set((a, b));
    });
    let engine = load(Some(cb.as_ref().unchecked_ref())).await;
    assert!(calls.get() >= 1);
    let (loaded, total) = last.get();
    assert_eq!(loaded, total);
    assert!(total > 400_000.0, "total = safetensors size, got {total}");
    assert!(engine.is_vlm());
    let r = engine.load_report();
    let largest = get(&r, "largestTensorBytes").as_f64().unwrap();
    let largest_read = get(&r, "largestReadBytes").as_f64().unwrap();
    let weight_bytes = get(&r, "weightBytes").as_f64().unwrap();
    assert!(largest > 0.0 && largest <= weight_bytes);
    // weights are read in row chunks (≤ 4 MiB, or one row pair when a row is larger), never more than a tensor
    assert!(largest_read > 0.0 && largest_read <= largest.max(4.0 * 1024.0 * 1024.0));
    let info = engine.adapter_info();
    assert!(get(&info, "maxStorageBufferBindingSize").as_f64().unwrap() > 0.0);
}

#[wasm_bindgen_test]
async fn generate_streams_text_and_respects_max_tokens() {
    let engine = load(None).await;
    let pieces = Rc::new(RefCell::new(String::new()));
    let p = pieces.clone();
    let cb = Closure::<dyn FnMut(String)>::new(move |s: String| p.borrow_mut().push_str(&s));
    let res = generate(
        &engine,
        r#"[{"role":"user","content":[{"type":"text","text":"Hello there"}]}]"#,
        vec![],
        6.0,
        Some(cb.as_ref().unchecked_ref::<Function>().clone()),
        None,
    )
    .await
    .expect("generates");
    let tokens = Array::from(&get(&res, "tokens"));
    assert!(tokens.length() >= 1 && tokens.length() <= 6, "1..=6 tokens, got {}", tokens.length());
    assert_eq!(get(&res, "text").as_string().unwrap(), *pieces.borrow(), "streamed pieces add up to the text");
    let finish = get(&res, "finishReason").as_string().unwrap();
    assert!(finish == "stop" || finish == "length", "{finish}");
    let usage = get(&res, "usage");
    assert!(get(&usage, "promptTokens").as_f64().unwrap() > 0.0);
}

#[wasm_bindgen_test]
async fn generate_with_an_image() {
    let engine = load(None).await;
    let msgs = r#"[{"role":"user","content":[{"type":"image"},{"type":"text","text":"What is it?"}]}]"#;
    let res =
        generate(&engine, msgs, vec![Uint8Array::from(IMAGE)], 3.0, None, None).await.expect("generates with an image");
    assert!(get(&get(&res, "stats"), "imageEncodeMs").as_f64().unwrap() > 0.0);
    // the same image again: served from the feature cache
    let res = generate(&engine, msgs, vec![Uint8Array::from(IMAGE)], 3.0, None, None).await.unwrap();
    assert_eq!(get(&get(&res, "stats"), "imagesFromCache").as_f64(), Some(1.0));
}

#[wasm_bindgen_test]
async fn abort_signal_cancels() {
    let engine = load(None).await;
    let msgs = r#"[{"role":"user","content":"Tell me a long story"}]"#;
    // already aborted: rejects with CancelledError before any work
    let ctrl = abort_controller();
    abort(&ctrl);
    let e = generate(&engine, msgs, vec![], 50.0, None, Some(get(&ctrl, "signal"))).await.unwrap_err();
    assert_eq!(error_name(&e), "CancelledError");
    // aborted from the first streamed piece: stops early
    let ctrl = abort_controller();
    let c2 = ctrl.clone();
    let seen = Rc::new(Cell::new(0u32));
    let s2 = seen.clone();
    let cb = Closure::<dyn FnMut(String)>::new(move |_s: String| {
        s2.set(s2.get() + 1);
        abort(&c2);
    });
    let out = generate(
        &engine,
        msgs,
        vec![],
        50.0,
        Some(cb.as_ref().unchecked_ref::<Function>().clone()),
        Some(get(&ctrl, "signal")),
    )
    .await;
    match out {
        Ok(res) => {
            let n = Array::from(&get(&res, "tokens")).length();
            let finish = get(&res, "finishReason").as_string().unwrap();
            assert!(finish == "cancelled" || (finish == "stop" && seen.get() == 0), "finish {finish} after {n} tokens");
            assert!(n < 50, "stopped early: {n}");
        }
        Err(e) => assert_eq!(error_name(&e), "CancelledError"),
    }
}

#[wasm_bindgen_test]
async fn typed_errors() {
    let e = WebvlmEngine::load_files(files(Some("tokenizer.json")).unchecked_into(), None).await.err().expect("fails");
    assert_eq!(error_name(&e), "ModelFormatError", "{:?}", get(&e, "message"));
    assert!(get(&e, "message").as_string().unwrap().contains("tokenizer.json"));

    let e = WebvlmEngine::load_gguf(Uint8Array::from(&b"not a gguf file at all"[..]), None, None)
        .await
        .err()
        .expect("fails");
    assert_eq!(error_name(&e), "ModelFormatError");

    let bad_dtype = obj(&[("dtype", "q3_k".into())]);
    let e = WebvlmEngine::load_files(files(None).unchecked_into(), Some(bad_dtype.unchecked_into()))
        .await
        .err()
        .expect("fails");
    assert_eq!(error_name(&e), "InvalidArgumentError");

    let engine = load(None).await;
    let msgs = r#"[{"role":"user","content":[{"type":"image"},{"type":"text","text":"?"}]}]"#;
    let e = generate(&engine, msgs, vec![Uint8Array::from(&b"plain text, not an image"[..])], 2.0, None, None)
        .await
        .unwrap_err();
    assert_eq!(error_name(&e), "ImageError");

    let long = format!(r#"[{{"role":"user","content":"{}"}}]"#, "the red circle ".repeat(150));
    let e = generate(&engine, &long, vec![], 2.0, None, None).await.unwrap_err();
    assert_eq!(error_name(&e), "ContextOverflowError");
    assert_eq!(get(&e, "context").as_f64(), Some(256.0));

    let e = generate(&engine, r#"{"not":"a list"}"#, vec![], 2.0, None, None).await.unwrap_err();
    assert_eq!(error_name(&e), "InvalidArgumentError");
}
