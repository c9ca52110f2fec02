//! Browser bindings (wasm-bindgen): the `WebvlmEngine` class that `pkg/src/*.js` wraps into the npm API.
//!
//! Typed, camelCase surface (no untyped `run(JsValue)`):
//! - `WebvlmEngine.loadFiles(files: Map<string, Uint8Array>, options)` — a Hugging Face repo layout;
//! - `WebvlmEngine.loadGguf(model: Uint8Array, mmproj: Uint8Array | undefined, options)` — llama.cpp GGUF;
//! - `engine.generate(messages, images, options, onText?, signal?)` → `Promise<GenerateResult>`;
//! - `engine.adapterInfo()`, `engine.loadReport()`, and the free function `probeAdapter()`.
//!
//! Weights stay in JS-owned `Uint8Array`s: [`JsBytesSource`] copies a few rows of one tensor at a time (≤ 4 MiB,
//! `ops::matmul::upload_ggml_chunked`) into wasm memory on their way to the GPU, so what the weights add to the
//! wasm heap during load is bounded by that chunk, not by the tensor or the model.
//! Errors are JS `Error`s whose `name` says what kind (see [`to_js_error`]); numbers ride along as fields.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use js_sys::{Function, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use crate::engine::{ChatRequest, Engine};
use crate::error::{Error, Result};
use crate::generation::{now_ms, CancelToken, GenerationConfig, StopReason};
use crate::gpu::{DType, GpuContext, GpuOptions};
use crate::loader::{JsBytesSource, WeightSource};
use crate::models::ModelFiles;
use crate::nn::LoadOptions;
use crate::processor::chat::{Content, ContentPart, Message};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Options for `WebvlmEngine.loadFiles` / `loadGguf`. */
export interface WasmLoadOptions {
  /** Weight dtype for linear layers: "f32" | "f16" | "bf16" | "q8_0" | "q4_0" | "q4_1"; omitted keeps the file's (bf16: f16 with shader-f16, else bf16). */
  dtype?: string;
  /** KV-cache length in tokens (default 2048, capped by the model). */
  maxContext?: number;
  /** Called as bytes of weights go to the GPU: (loaded, total). */
  onProgress?: (loaded: number, total: number) => void;
}
/** Options for `engine.generate`. */
export interface WasmGenerateOptions {
  maxTokens?: number;
  /** 0 = greedy (default). */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Hugging Face's, over the prompt's ids and the generated ones (1 = off). */
  repetitionPenalty?: number;
  seed?: number;
}
export interface WasmChatMessage {
  role: string;
  content: string | Array<{ type: "text"; text: string } | { type: "image" }>;
}
export interface WasmGenerateResult {
  text: string;
  tokens: number[];
  finishReason: "stop" | "length" | "cancelled";
  usage: { promptTokens: number; completionTokens: number; totalTokens: number };
  stats: { prefillMs: number; decodeMs: number; imageEncodeMs: number; imagesFromCache: number;
           prefillTokensPerSecond: number; decodeTokensPerSecond: number; totalMs: number };
}
/** A question for the Rust pipeline (caption → rephrase → retrieve → answer with [n] citations). */
export interface WasmPipelineRequest {
  question: string;
  /** "vlm" (default): the VLM writes the query from image + question; "legacy": a text rephraser from the caption. */
  arm?: "vlm" | "legacy";
  /** Documents to retrieve (default from the config, 5). */
  k?: number;
  tags?: string[];
  ocrText?: string;
}
export interface WasmPipelineOptions {
  /** Base URL of the search/v1 server, e.g. location.origin. */
  searchUrl: string;
  /** PipelineConfig overrides (serde names: prompts, timeouts, top_k, max_snippet_chars, answer, ...). */
  config?: object;
  /** A remote OpenAI-compatible generator for the answer (`/v1/chat/completions`, SSE); default: this engine.
   *  With `config.fallback_to_local` (default true) this engine answers when the remote fails before any text. */
  generator?: WasmRemoteGenerator;
}
export interface WasmRemoteGenerator {
  /** `https://host` (then `/v1/chat/completions` is appended), `…/v1`, or the full `…/chat/completions` URL. */
  url: string;
  /** The request's `model` field (default "default"). */
  model?: string;
  /** Sent as `Authorization: Bearer …`. */
  apiKey?: string;
}
export interface WasmTraceEntry { step: "caption" | "rephrase" | "retrieve" | "generate"; via: string; input: string; output: string; ms: number; error: string | null }
export type WasmPipelineEvent = { type: "step"; entry: WasmTraceEntry } | { type: "text"; text: string };
export interface WasmPipelineResult {
  question: string; arm: string; caption: string; query: string;
  documents: { id: string; rank: number; score: number; title: string; url: string; snippet: string; source: string }[];
  answer: string; citations: { n: number; id: string; title: string; url: string }[];
  degraded: string | null; trace: WasmTraceEntry[];
}
export interface WasmAdapterInfo {
  adapter: string; backend: string; driver: string; shaderF16: boolean; subgroups: boolean;
  maxStorageBufferBindingSize: number; maxBufferSize: number; maxComputeInvocationsPerWorkgroup: number;
  /** A CPU emulation of a GPU (SwiftShader, lavapipe): matrix products take the barrier-free kernel. */
  cpuAdapter: boolean;
  /** The subgroup size where subgroups exist and the adapter has one size (SwiftShader: 4); else null. */
  subgroupSize: number | null;
  /** Timestamp queries: `startProfiling` works. */
  timestamps: boolean;
}
export interface WasmProfile {
  /** GPU time per kernel (`shader:entry defines`), largest first. */
  kernels: { kernel: string; dispatches: number; gpu_ms: number }[];
  submissions: number; gpu_ms: number;
  /** Dispatches past the 2048 a submission can time. */
  untimed_dispatches: number;
}
export interface WasmLoadReport {
  /** Bytes of weights read (= uploaded). */
  weightBytes: number;
  /** The largest tensor in the model files (from their headers). */
  largestTensorBytes: number;
  /** The largest single read from a weight file: weights are read in row chunks of at most ~4 MiB. */
  largestReadBytes: number;
  /** wasm linear memory before and after the load (it never shrinks, so `after` bounds the peak). */
  wasmMemoryBefore: number;
  /** wasm memory when the first tensor data was read: metadata, tokenizer and template are loaded by then. */
  wasmMemoryAtFirstWeight: number;
  /** wasmMemoryAfter - wasmMemoryAtFirstWeight: what streaming the weights to the GPU cost in wasm memory. */
  weightPhaseGrowth: number;
  wasmMemoryAfter: number;
  loadMs: number;
  isVlm: boolean;
  maxContext: number;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// `WasmLoadOptions`, read through its getters.
    #[wasm_bindgen(typescript_type = "WasmLoadOptions")]
    pub type LoadOpts;
    #[wasm_bindgen(method, getter, structural)]
    fn dtype(this: &LoadOpts) -> Option<String>;
    #[wasm_bindgen(method, getter, structural, js_name = maxContext)]
    fn max_context(this: &LoadOpts) -> Option<f64>;
    #[wasm_bindgen(method, getter, structural, js_name = onProgress)]
    fn on_progress(this: &LoadOpts) -> Option<Function>;

    #[wasm_bindgen(typescript_type = "WasmGenerateOptions")]
    pub type GenerateOpts;
    #[wasm_bindgen(method, getter, structural, js_name = maxTokens)]
    fn max_tokens(this: &GenerateOpts) -> Option<f64>;
    #[wasm_bindgen(method, getter, structural)]
    fn temperature(this: &GenerateOpts) -> Option<f64>;
    #[wasm_bindgen(method, getter, structural, js_name = topK)]
    fn top_k(this: &GenerateOpts) -> Option<f64>;
    #[wasm_bindgen(method, getter, structural, js_name = topP)]
    fn top_p(this: &GenerateOpts) -> Option<f64>;
    #[wasm_bindgen(method, getter, structural, js_name = repetitionPenalty)]
    fn repetition_penalty(this: &GenerateOpts) -> Option<f64>;
    #[wasm_bindgen(method, getter, structural)]
    fn seed(this: &GenerateOpts) -> Option<f64>;

    #[wasm_bindgen(typescript_type = "WasmChatMessage[]")]
    pub type Messages;

    #[wasm_bindgen(typescript_type = "WasmPipelineRequest")]
    pub type PipelineReq;
    #[wasm_bindgen(method, getter, structural)]
    fn question(this: &PipelineReq) -> Option<String>;
    #[wasm_bindgen(method, getter, structural)]
    fn arm(this: &PipelineReq) -> Option<String>;
    #[wasm_bindgen(method, getter, structural)]
    fn k(this: &PipelineReq) -> Option<f64>;
    #[wasm_bindgen(method, getter, structural)]
    fn tags(this: &PipelineReq) -> Option<Vec<String>>;
    #[wasm_bindgen(method, getter, structural, js_name = ocrText)]
    fn ocr_text(this: &PipelineReq) -> Option<String>;

    #[wasm_bindgen(typescript_type = "WasmPipelineOptions")]
    pub type PipelineOpts;
    #[wasm_bindgen(method, getter, structural, js_name = searchUrl)]
    fn search_url(this: &PipelineOpts) -> Option<String>;
    #[wasm_bindgen(method, getter, structural)]
    fn config(this: &PipelineOpts) -> JsValue;
    #[wasm_bindgen(method, getter, structural)]
    fn generator(this: &PipelineOpts) -> JsValue;

    #[wasm_bindgen(typescript_type = "(event: WasmPipelineEvent) => void")]
    pub type PipelineCallback;

    #[wasm_bindgen(typescript_type = "Map<string, Uint8Array>")]
    pub type FileMap;

    /// The DOM's `AbortSignal` (declared here so the crate needs no extra web-sys features).
    #[wasm_bindgen(typescript_type = "AbortSignal")]
    pub type AbortSignal;
    #[wasm_bindgen(method, getter, structural)]
    fn aborted(this: &AbortSignal) -> bool;
    #[wasm_bindgen(method, structural, js_name = addEventListener)]
    fn add_event_listener(this: &AbortSignal, kind: &str, f: &Function);
    #[wasm_bindgen(method, structural, js_name = removeEventListener)]
    fn remove_event_listener(this: &AbortSignal, kind: &str, f: &Function);
}

/// Current size of the wasm linear memory in bytes.
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    let mem: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
    mem.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as f64
}

/// Counts what the loader reads (progress, largest tensor) and reports it to an optional JS callback.
struct Meter {
    read: Cell<u64>,
    largest: Cell<u64>,
    /// The largest tensor in the files' headers.
    largest_tensor: Cell<u64>,
    total: u64,
    callback: Option<Function>,
    last_report: Cell<u64>,
    /// wasm memory when the first tensor data was read (after metadata, tokenizer and template).
    mem_at_first_weight: Cell<Option<f64>>,
}

impl Meter {
    fn add(&self, n: u64) {
        self.read.set(self.read.get() + n);
        self.largest.set(self.largest.get().max(n));
        // report at most every 1/200 of the total, and at the end
        let step = (self.total / 200).max(1 << 20);
        if let Some(f) = &self.callback {
            if self.read.get() >= self.last_report.get() + step || self.read.get() >= self.total {
                self.last_report.set(self.read.get());
                let _ = f.call2(&JsValue::NULL, &(self.read.get() as f64).into(), &(self.total as f64).into());
            }
        }
    }
}

/// A JS byte array read through the [`Meter`].
struct MeteredSource {
    src: JsBytesSource,
    meter: Rc<Meter>,
    /// Where tensor data starts (reads before it are headers).
    data_start: u64,
}

impl MeteredSource {
    fn new(a: Uint8Array, meter: Rc<Meter>, name: &str) -> Self {
        let src = JsBytesSource(a);
        let (data_start, largest) = if name.ends_with(".gguf") {
            crate::loader::gguf::Gguf::parse(&src)
                .map(|g| (g.data_offset, g.tensors().iter().map(|t| t.n_bytes).max().unwrap_or(0)))
                .unwrap_or((0, 0))
        } else if name.ends_with(".safetensors") && src.len() >= 8 {
            let mut n = [0u8; 8];
            let start = src.read_exact_at(0, &mut n).map(|_| 8 + u64::from_le_bytes(n)).unwrap_or(0);
            let largest = crate::loader::safetensors::Safetensors::parse(&src)
                .map(|s| s.tensors().iter().map(|t| t.n_bytes).max().unwrap_or(0))
                .unwrap_or(0);
            (start, largest)
        } else {
            (u64::MAX, 0)
        };
        meter.largest_tensor.set(meter.largest_tensor.get().max(largest));
        Self { src, meter, data_start }
    }
}

impl WeightSource for MeteredSource {
    fn len(&self) -> u64 {
        self.src.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if offset >= self.data_start && self.meter.mem_at_first_weight.get().is_none() {
            self.meter.mem_at_first_weight.set(Some(wasm_memory_bytes()));
        }
        self.src.read_exact_at(offset, buf)?;
        self.meter.add(buf.len() as u64);
        Ok(())
    }
}

/// Files of a Hugging Face repo layout, held as JS `Uint8Array`s.
struct JsFiles {
    files: BTreeMap<String, Uint8Array>,
    meter: Rc<Meter>,
}

impl ModelFiles for JsFiles {
    fn open(&self, name: &str) -> Result<Box<dyn WeightSource>> {
        let a = self.files.get(name).ok_or_else(|| Error::Format {
            format: "model files",
            detail: format!("missing model file `{name}`; pass it in the files map"),
        })?;
        Ok(Box::new(MeteredSource::new(a.clone(), self.meter.clone(), name)))
    }
    fn exists(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }
}

fn parse_dtype(s: Option<String>) -> Result<Option<DType>> {
    Ok(match s.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("auto") => None,
        Some("f32") | Some("fp32") => Some(DType::F32),
        Some("f16") | Some("fp16") => Some(DType::F16),
        Some("bf16") => Some(DType::BF16),
        Some("q8_0") | Some("q8") => Some(DType::Q8_0),
        Some("q4_0") | Some("q4") => Some(DType::Q4_0),
        Some("q4_1") => Some(DType::Q4_1),
        Some(other) => {
            return Err(Error::Config(format!("unknown dtype `{other}`; use f32, f16, bf16, q8_0, q4_0 or q4_1")));
        }
    })
}

/// Sets `obj[key] = value` (JS objects built here are plain, so this cannot fail in practice).
fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), &value.into());
}

/// Turns an [`Error`] into a JS `Error` whose `name` is one of `WebGPUNotAvailableError`, `LimitsError`,
/// `MissingFeatureError`, `DeviceLostError`, `ModelFormatError`, `ImageError`, `ContextOverflowError`,
/// `CancelledError`, `NetworkError`, `InvalidArgumentError` or `WebvlmError`, with the numbers as fields.
pub fn to_js_error(e: &Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    let name = match e {
        Error::NoAdapter(_) | Error::DeviceRequest(_) => "WebGPUNotAvailableError",
        Error::LimitExceeded { limit, needed, offered, what } => {
            set(&err, "limit", *limit);
            set(&err, "needed", *needed as f64);
            set(&err, "offered", *offered as f64);
            set(&err, "what", what.as_str());
            "LimitsError"
        }
        Error::MissingFeature { feature, .. } => {
            set(&err, "feature", *feature);
            "MissingFeatureError"
        }
        Error::DeviceLost(_) => "DeviceLostError",
        Error::Format { .. }
        | Error::MissingTensor { .. }
        | Error::BadTensor { .. }
        | Error::UnsupportedModel(_)
        | Error::Tokenizer(_) => "ModelFormatError",
        Error::Image(_) => "ImageError",
        Error::ContextOverflow { tokens, context } => {
            set(&err, "tokens", *tokens as f64);
            set(&err, "context", *context as f64);
            "ContextOverflowError"
        }
        Error::Cancelled => "CancelledError",
        Error::Http { url, .. } => {
            set(&err, "url", url.as_str());
            "NetworkError"
        }
        Error::Config(_) | Error::Template(_) | Error::ValueRange { .. } => "InvalidArgumentError",
        _ => "WebvlmError",
    };
    err.set_name(name);
    err.into()
}

fn invalid(msg: impl Into<String>) -> JsValue {
    let err = js_sys::Error::new(&msg.into());
    err.set_name("InvalidArgumentError");
    err.into()
}

#[derive(Clone, Copy, Default)]
struct LoadReport {
    weight_bytes: u64,
    largest: u64,
    largest_tensor: u64,
    mem_before: f64,
    mem_at_first_weight: f64,
    mem_after: f64,
    load_ms: f64,
}

/// A loaded model (weights on the GPU, tokenizer, template, image processor).
#[wasm_bindgen]
pub struct WebvlmEngine {
    engine: Arc<Engine>,
    report: LoadReport,
}

const DEFAULT_CONTEXT: usize = 2048;

async fn new_context() -> Result<Arc<GpuContext>> {
    let swiftshader = web_adapter_is_swiftshader().await;
    // timestamp queries cost nothing until `startProfiling`
    GpuContext::new(GpuOptions { swiftshader, allow_timestamps: true, ..GpuOptions::default() }).await
}

/// Whether `navigator.gpu`'s adapter describes itself as SwiftShader (`GPUAdapterInfo`: Chromium reports vendor
/// "google", architecture "swiftshader"). wgpu's web backend leaves the adapter unnamed, so the kernels' choice
/// for that adapter ([`GpuOptions::swiftshader`]) is made from here. False when anything is missing.
async fn web_adapter_is_swiftshader() -> bool {
    use js_sys::Reflect;
    let get = |o: &JsValue, k: &str| Reflect::get(o, &JsValue::from_str(k)).ok().filter(|v| !v.is_undefined());
    let Some(gpu) = get(&js_sys::global(), "navigator").and_then(|n| get(&n, "gpu")) else { return false };
    let Some(request) = get(&gpu, "requestAdapter").and_then(|f| f.dyn_into::<Function>().ok()) else {
        return false;
    };
    let Ok(promise) = request.call0(&gpu).and_then(|p| p.dyn_into::<js_sys::Promise>()) else { return false };
    let Ok(adapter) = wasm_bindgen_futures::JsFuture::from(promise).await else { return false };
    let Some(info) = get(&adapter, "info") else { return false };
    ["vendor", "architecture", "description", "device"]
        .iter()
        .filter_map(|k| get(&info, k).and_then(|v| v.as_string()))
        .any(|s| s.to_lowercase().contains("swiftshader"))
}

fn meter_for(opts: &Option<LoadOpts>, total: u64) -> Rc<Meter> {
    Rc::new(Meter {
        read: Cell::new(0),
        largest: Cell::new(0),
        largest_tensor: Cell::new(0),
        total,
        callback: opts.as_ref().and_then(|o| o.on_progress()),
        last_report: Cell::new(0),
        mem_at_first_weight: Cell::new(None),
    })
}

fn options(opts: &Option<LoadOpts>) -> Result<(LoadOptions, usize)> {
    let dtype = parse_dtype(opts.as_ref().and_then(|o| o.dtype()))?;
    let ctx = opts.as_ref().and_then(|o| o.max_context()).map(|c| c.max(16.0) as usize).unwrap_or(DEFAULT_CONTEXT);
    Ok((LoadOptions { dtype, ..Default::default() }, ctx))
}

#[wasm_bindgen]
impl WebvlmEngine {
    /// Loads a Hugging Face repo layout from a `Map` of file name → bytes (`config.json`, `model.safetensors` or
    /// shards + index, `tokenizer.json`, `tokenizer_config.json` / `chat_template.json` / `chat_template.jinja`,
    /// `preprocessor_config.json`; for a LLaVA repo whose decoder is a GGUF file, that file under the name
    /// `config.json` gives it, and then `tokenizer.json` may be left out).
    #[wasm_bindgen(js_name = loadFiles)]
    pub async fn load_files(files: FileMap, options_: Option<LoadOpts>) -> Result<WebvlmEngine, JsValue> {
        let map: &js_sys::Map = files.unchecked_ref();
        let mut files = BTreeMap::new();
        let mut total = 0u64;
        let mut bad = None;
        map.for_each(&mut |v, k| match (k.as_string(), v.dyn_into::<Uint8Array>()) {
            (Some(k), Ok(a)) => {
                if k.ends_with(".safetensors") || k.ends_with(".gguf") {
                    total += a.length() as u64;
                }
                files.insert(k, a);
            }
            _ => bad = Some("every entry of the files map must be string → Uint8Array"),
        });
        if let Some(b) = bad {
            return Err(invalid(b));
        }
        let (opts, max_context) = options(&options_).map_err(|e| to_js_error(&e))?;
        let mem_before = wasm_memory_bytes();
        let t0 = now_ms();
        let ctx = new_context().await.map_err(|e| to_js_error(&e))?;
        let meter = meter_for(&options_, total);
        let files = JsFiles { files, meter: meter.clone() };
        let engine = Engine::load_hf(ctx, &files, opts, max_context).map_err(|e| to_js_error(&e))?;
        Ok(Self::finish(engine, &meter, mem_before, t0))
    }

    /// Loads a llama.cpp GGUF text model (tokenizer and chat template from its metadata) and an optional
    /// `mmproj` vision projector GGUF.
    #[wasm_bindgen(js_name = loadGguf)]
    pub async fn load_gguf(
        model: Uint8Array,
        mmproj: Option<Uint8Array>,
        options_: Option<LoadOpts>,
    ) -> Result<WebvlmEngine, JsValue> {
        let (opts, max_context) = options(&options_).map_err(|e| to_js_error(&e))?;
        let total = model.length() as u64 + mmproj.as_ref().map_or(0, |m| m.length() as u64);
        let mem_before = wasm_memory_bytes();
        let t0 = now_ms();
        let ctx = new_context().await.map_err(|e| to_js_error(&e))?;
        let meter = meter_for(&options_, total);
        let text: Box<dyn WeightSource> = Box::new(MeteredSource::new(model, meter.clone(), "model.gguf"));
        let mm = mmproj.map(|m| Box::new(MeteredSource::new(m, meter.clone(), "mmproj.gguf")) as Box<dyn WeightSource>);
        let engine = Engine::load_gguf(ctx, text, mm, opts, max_context).map_err(|e| to_js_error(&e))?;
        Ok(Self::finish(engine, &meter, mem_before, t0))
    }

    fn finish(engine: Engine, meter: &Meter, mem_before: f64, t0: f64) -> Self {
        if let Some(f) = &meter.callback {
            let _ = f.call2(&JsValue::NULL, &(meter.total as f64).into(), &(meter.total as f64).into());
        }
        let report = LoadReport {
            weight_bytes: meter.read.get(),
            largest: meter.largest.get(),
            largest_tensor: meter.largest_tensor.get(),
            mem_before,
            mem_at_first_weight: meter.mem_at_first_weight.get().unwrap_or(mem_before),
            mem_after: wasm_memory_bytes(),
            load_ms: now_ms() - t0,
        };
        // `Pipeline::with_engine` takes an `Arc` (the native server shares engines across threads); on wasm the
        // engine (wgpu's web types) is neither Send nor Sync, and stays on this thread
        #[allow(clippy::arc_with_non_send_sync)]
        let engine = Arc::new(engine);
        Self { engine, report }
    }

    /// Whether the model takes images.
    #[wasm_bindgen(getter, js_name = isVlm)]
    pub fn is_vlm(&self) -> bool {
        self.engine.is_vlm()
    }

    /// The KV-cache length in tokens.
    #[wasm_bindgen(getter, js_name = maxContext)]
    pub fn max_context(&self) -> usize {
        self.engine.max_context()
    }

    /// The adapter this engine runs on.
    #[wasm_bindgen(js_name = adapterInfo, unchecked_return_type = "WasmAdapterInfo")]
    pub fn adapter_info(&self) -> JsValue {
        caps_object(&self.engine.ctx)
    }

    /// Forgets the encoded features of the images seen so far (the next request with an image encodes it again:
    /// `evaluate()` clears them before each arm so each pays for its own encode).
    #[wasm_bindgen(js_name = clearImageCache)]
    pub fn clear_image_cache(&self) {
        self.engine.clear_image_cache();
    }

    /// Starts timing every GPU dispatch (timestamp queries, one compute pass per dispatch: slower, so take speeds
    /// from unprofiled runs). Throws `MissingFeatureError` where the adapter has no timestamp queries.
    #[wasm_bindgen(js_name = startProfiling)]
    pub fn start_profiling(&self) -> Result<(), JsValue> {
        self.engine.ctx.start_profiling().map_err(|e| to_js_error(&e))
    }

    /// Stops profiling: GPU milliseconds per kernel (`{kernels: [{kernel, dispatches, gpu_ms}], submissions,
    /// gpu_ms, untimed_dispatches}`, largest first) since [`startProfiling`](Self::start_profiling).
    #[wasm_bindgen(js_name = stopProfiling, unchecked_return_type = "Promise<WasmProfile>")]
    pub fn stop_profiling(&self) -> js_sys::Promise {
        let engine = self.engine.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let profile = engine.ctx.finish_profiling().await.map_err(|e| to_js_error(&e))?;
            let json = serde_json::to_string(&profile).map_err(|e| invalid(e.to_string()))?;
            js_sys::JSON::parse(&json)
        })
    }

    /// Bytes, timings and memory of the load.
    #[wasm_bindgen(js_name = loadReport, unchecked_return_type = "WasmLoadReport")]
    pub fn load_report(&self) -> JsValue {
        let r = &self.report;
        let o = Object::new();
        set(&o, "weightBytes", r.weight_bytes as f64);
        set(&o, "largestTensorBytes", r.largest_tensor as f64);
        set(&o, "largestReadBytes", r.largest as f64);
        set(&o, "wasmMemoryBefore", r.mem_before);
        set(&o, "wasmMemoryAtFirstWeight", r.mem_at_first_weight);
        set(&o, "weightPhaseGrowth", r.mem_after - r.mem_at_first_weight);
        set(&o, "wasmMemoryAfter", r.mem_after);
        set(&o, "loadMs", r.load_ms);
        set(&o, "isVlm", self.engine.is_vlm());
        set(&o, "maxContext", self.engine.max_context() as f64);
        o.into()
    }

    /// Generates an answer. `messages` is a chat (content: a string or `[{type:"text",text},{type:"image"}]`
    /// parts; one `images` entry per image part, in order: PNG/JPEG/WebP bytes). `onText` receives each piece of
    /// text as it is decoded. Aborting `signal` stops generation: the promise then rejects with `CancelledError`
    /// if nothing was generated yet, else resolves with `finishReason: "cancelled"`.
    #[wasm_bindgen(unchecked_return_type = "Promise<WasmGenerateResult>")]
    pub fn generate(
        &self,
        messages: Messages,
        images: Vec<Uint8Array>,
        options_: Option<GenerateOpts>,
        on_text: Option<Function>,
        signal: Option<AbortSignal>,
    ) -> js_sys::Promise {
        let engine = self.engine.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let json = js_sys::JSON::stringify(&messages).map_err(|_| invalid("messages must be JSON-serialisable"))?;
            let mut messages: Vec<Message> = serde_json::from_str(&String::from(json))
                .map_err(|e| invalid(format!("messages: {e}; expected [{{role, content}}] with text/image parts")))?;
            if engine.is_vlm() {
                // VLM templates (Idefics3/SmolVLM) iterate over content parts; a plain string would render empty
                for m in &mut messages {
                    if let Content::Text(t) = &m.content {
                        m.content = Content::Parts(vec![ContentPart::Text { text: t.clone() }]);
                    }
                }
            }
            let mut generation = GenerationConfig::default();
            if let Some(o) = &options_ {
                if let Some(v) = o.max_tokens() {
                    generation.max_new_tokens = v.max(0.0) as usize;
                }
                if let Some(v) = o.temperature() {
                    generation.temperature = v as f32;
                }
                if let Some(v) = o.top_k() {
                    generation.top_k = v.max(0.0) as u32;
                }
                if let Some(v) = o.top_p() {
                    generation.top_p = v as f32;
                }
                if let Some(v) = o.repetition_penalty() {
                    generation.repetition_penalty = v as f32;
                }
                if let Some(v) = o.seed() {
                    generation.seed = v.max(0.0) as u64;
                }
            }
            let req = ChatRequest { messages, images: images.iter().map(|a| a.to_vec()).collect(), generation };
            drop(images);
            let cancel = CancelToken::default();
            let listener = signal.as_ref().map(|s| {
                let c = cancel.clone();
                let cb = Closure::<dyn FnMut()>::new(move || c.cancel());
                s.add_event_listener("abort", cb.as_ref().unchecked_ref());
                cb
            });
            if signal.as_ref().is_some_and(|s| s.aborted()) {
                cancel.cancel();
            }
            let t0 = now_ms();
            let result = if cancel.is_cancelled() {
                Err(Error::Cancelled)
            } else {
                engine
                    .chat(&req, &cancel, |s| {
                        if let Some(f) = &on_text {
                            let _ = f.call1(&JsValue::NULL, &JsValue::from_str(s));
                        }
                    })
                    .await
            };
            if let (Some(s), Some(cb)) = (&signal, &listener) {
                s.remove_event_listener("abort", cb.as_ref().unchecked_ref());
            }
            let r = result.map_err(|e| to_js_error(&e))?;
            if r.stop == StopReason::Cancelled && r.tokens.is_empty() {
                return Err(to_js_error(&Error::Cancelled));
            }
            let g = &r.stats.generation;
            let finish = match r.stop {
                StopReason::StopToken => "stop",
                StopReason::MaxTokens | StopReason::ContextFull => "length",
                StopReason::Cancelled => "cancelled",
            };
            let out = serde_json::json!({
                "text": r.text,
                "tokens": r.tokens,
                "finishReason": finish,
                "usage": {
                    "promptTokens": g.prompt_tokens,
                    "completionTokens": g.generated_tokens,
                    "totalTokens": g.prompt_tokens + g.generated_tokens,
                },
                "stats": {
                    "prefillMs": g.prefill_ms,
                    "decodeMs": g.decode_ms,
                    "imageEncodeMs": r.stats.image_encode_ms,
                    "imagesFromCache": r.stats.images_from_cache,
                    "prefillTokensPerSecond": g.prefill_tok_s(),
                    "decodeTokensPerSecond": g.decode_tok_s(),
                    "submissionsPerToken": g.submissions_per_token,
                    "dispatchesPerToken": g.dispatches_per_token,
                    "totalMs": now_ms() - t0,
                },
            });
            js_sys::JSON::parse(&out.to_string()).map_err(|_| invalid("internal: result JSON"))
        })
    }
}

#[wasm_bindgen]
impl WebvlmEngine {
    /// Runs the multimodal pipeline of `src/pipeline` with this engine: caption (VLM), search query, retrieval from
    /// a `search/v1` server, and an answer citing the documents as `[n]`. `onEvent` sees each finished step and
    /// each piece of the answer. Rejects only when the request cannot start or is cancelled; failures of a step
    /// are in the result's `trace` and `degraded`.
    #[wasm_bindgen(js_name = runPipeline, unchecked_return_type = "Promise<WasmPipelineResult>")]
    pub fn run_pipeline(
        &self,
        request: PipelineReq,
        image: Option<Uint8Array>,
        options: PipelineOpts,
        on_event: Option<PipelineCallback>,
        signal: Option<AbortSignal>,
    ) -> js_sys::Promise {
        let engine = self.engine.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            use crate::pipeline::{Arm, Pipeline, PipelineConfig, PipelineEvent, PipelineRequest};
            use crate::retrieval::{RetrievalClient, RetrievalConfig};
            let config: PipelineConfig = {
                let c = options.config();
                if c.is_undefined() || c.is_null() {
                    PipelineConfig::default()
                } else {
                    let j = js_sys::JSON::stringify(&c).map_err(|_| invalid("config must be JSON-serialisable"))?;
                    serde_json::from_str(&String::from(j)).map_err(|e| invalid(format!("pipeline config: {e}")))?
                }
            };
            let base_url =
                options.search_url().ok_or_else(|| invalid("options.searchUrl is required (e.g. location.origin)"))?;
            let retrieval =
                RetrievalClient::new(RetrievalConfig::SearchV1 { base_url }).map_err(|e| to_js_error(&e))?;
            let arm = match request.arm() {
                Some(a) => a.parse::<Arm>().map_err(|e| to_js_error(&e))?,
                None => Arm::default(),
            };
            let req = PipelineRequest {
                question: request.question().unwrap_or_default(),
                image: image.map(|a| a.to_vec()),
                arm,
                tags: request.tags().unwrap_or_default(),
                ocr_text: request.ocr_text(),
                k: request.k().map(|k| k.max(0.0) as usize),
            };
            let mut pipeline = Pipeline::new(config).with_engine(engine).with_retrieval(retrieval);
            let g = options.generator();
            if !(g.is_undefined() || g.is_null()) {
                #[derive(serde::Deserialize)]
                #[serde(rename_all = "camelCase", deny_unknown_fields)]
                struct Remote {
                    url: String,
                    model: Option<String>,
                    api_key: Option<String>,
                }
                let j = js_sys::JSON::stringify(&g).map_err(|_| invalid("options.generator must be an object"))?;
                let r: Remote = serde_json::from_str(&String::from(j))
                    .map_err(|e| invalid(format!("options.generator ({{url, model?, apiKey?}}): {e}")))?;
                let mut oc = crate::pipeline::OpenAiConfig::new(r.url);
                if let Some(m) = r.model {
                    oc.model = m;
                }
                oc.api_key = r.api_key;
                let remote = crate::pipeline::OpenAiGenerator::new(oc).map_err(|e| to_js_error(&e))?;
                pipeline = pipeline.with_generator(Box::new(remote));
            }
            let cancel = CancelToken::default();
            let listener = signal.as_ref().map(|s| {
                let c = cancel.clone();
                let cb = Closure::<dyn FnMut()>::new(move || c.cancel());
                s.add_event_listener("abort", cb.as_ref().unchecked_ref());
                cb
            });
            if signal.as_ref().is_some_and(|s| s.aborted()) {
                cancel.cancel();
            }
            let f: Option<Function> = on_event.map(|f| f.unchecked_into());
            let result = pipeline
                .run(&req, &cancel, |ev| {
                    let Some(f) = &f else { return };
                    let o = Object::new();
                    match ev {
                        PipelineEvent::Step(entry) => {
                            set(&o, "type", "step");
                            if let Ok(j) = serde_json::to_string(entry) {
                                set(&o, "entry", js_sys::JSON::parse(&j).unwrap_or(JsValue::NULL));
                            }
                        }
                        PipelineEvent::Text(t) => {
                            set(&o, "type", "text");
                            set(&o, "text", t);
                        }
                    }
                    let _ = f.call1(&JsValue::NULL, &o);
                })
                .await;
            if let (Some(s), Some(cb)) = (&signal, &listener) {
                s.remove_event_listener("abort", cb.as_ref().unchecked_ref());
            }
            let r = result.map_err(|e| to_js_error(&e))?;
            let j = serde_json::to_string(&r).map_err(|e| invalid(format!("internal: {e}")))?;
            js_sys::JSON::parse(&j).map_err(|_| invalid("internal: result JSON"))
        })
    }
}

/// Summarizes side-by-side evaluation records (the objects of `webvlm eval`'s records.jsonl, as a JSON array):
/// per-arm metrics, McNemar's test on exact match, relative gains and, when records carry judge verdicts, the win
/// rate with its Wilson score interval. Returns the summary JSON.
#[wasm_bindgen(js_name = summarizeEval)]
pub fn summarize_eval(records_json: &str, k: u32, seed: f64) -> Result<String, JsValue> {
    let records: Vec<crate::eval::EvalRecord> =
        serde_json::from_str(records_json).map_err(|e| invalid(format!("evaluation records: {e}")))?;
    let cfg = crate::eval::SummaryConfig { k: k.max(1) as usize, seed: seed.max(0.0) as u64 };
    Ok(crate::eval::summarize_with(&records, &cfg).to_json_pretty())
}

/// The self-contained HTML report of evaluation records (as `webvlm eval` writes it). Images that are
/// `data:image/…` URLs are shown; other image references are left out.
#[wasm_bindgen(js_name = evalReportHtml)]
pub fn eval_report_html(records_json: &str, k: u32, seed: f64, title: &str) -> Result<String, JsValue> {
    let records: Vec<crate::eval::EvalRecord> =
        serde_json::from_str(records_json).map_err(|e| invalid(format!("evaluation records: {e}")))?;
    let cfg = crate::eval::SummaryConfig { k: k.max(1) as usize, seed: seed.max(0.0) as u64 };
    let summary = crate::eval::summarize_with(&records, &cfg);
    let meta = crate::eval::report::ReportMeta { title: title.to_string(), facts: vec![] };
    let image = |r: &str| r.starts_with("data:image/").then(|| r.to_string());
    Ok(crate::eval::report::html(&summary, &records, &meta, &image))
}

fn caps_object(ctx: &GpuContext) -> JsValue {
    let c = &ctx.caps;
    let o = Object::new();
    set(&o, "adapter", c.adapter_name.as_str());
    set(&o, "backend", c.backend.as_str());
    set(&o, "driver", c.driver.as_str());
    set(&o, "shaderF16", c.shader_f16);
    set(&o, "subgroups", c.subgroups);
    set(&o, "maxStorageBufferBindingSize", c.max_storage_binding as f64);
    set(&o, "maxBufferSize", c.max_buffer_size as f64);
    set(&o, "maxComputeInvocationsPerWorkgroup", c.max_workgroup_invocations as f64);
    set(&o, "cpuAdapter", c.cpu_adapter);
    set(&o, "subgroupSize", c.subgroup_size.map_or(JsValue::NULL, |s| JsValue::from(s)));
    set(&o, "timestamps", c.timestamps);
    o.into()
}

/// Opens the GPU once and describes the adapter (rejects with `WebGPUNotAvailableError` when there is none).
#[wasm_bindgen(js_name = probeAdapter, unchecked_return_type = "Promise<WasmAdapterInfo>")]
pub fn probe_adapter() -> js_sys::Promise {
    wasm_bindgen_futures::future_to_promise(async move {
        let ctx = new_context().await.map_err(|e| to_js_error(&e))?;
        Ok(caps_object(&ctx))
    })
}
