// createEngine(): model resolution and download, load into the wasm runtime, and the OpenAI-style chat API.

import initWasm, { WebvlmEngine, probeAdapter as wasmProbe, summarizeEval, evalReportHtml } from '../wasm/webvlm.js';
import { fetchBytes } from './fetch.js';
import { imageBytes, splitMessages } from './images.js';
import { toWebvlmError, InvalidArgumentError, WebGPUNotAvailableError, CancelledError, MissingFeatureError } from './errors.js';

let wasmReady = null;

/** Instantiates the wasm module once (`wasmUrl` overrides where `webvlm_bg.wasm` is fetched from). */
export function initRuntime({ wasmUrl } = {}) {
  if (!wasmReady) {
    wasmReady = initWasm(wasmUrl ? { module_or_path: wasmUrl } : undefined).catch((e) => {
      wasmReady = null;
      throw e;
    });
  }
  return wasmReady;
}

/** Describes the WebGPU adapter (rejects with WebGPUNotAvailableError when there is none). */
export async function probeAdapter(options = {}) {
  if (typeof navigator === 'undefined' || !navigator.gpu) {
    throw new WebGPUNotAvailableError('this browser has no WebGPU (navigator.gpu is missing); use a recent Chrome/Edge, or Firefox/Safari with WebGPU enabled');
  }
  await initRuntime(options);
  try {
    return await wasmProbe();
  } catch (e) {
    throw toWebvlmError(e);
  }
}

const HF = 'https://huggingface.co';

/**
 * A model spec → what to fetch. Accepted:
 * - `"owner/name"` (a Hugging Face repo id) or `{ repo, revision }`;
 * - a URL ending in `.gguf` (optionally `{ gguf, mmproj }` with URLs, Files/Blobs or bytes);
 * - a URL ending in `/` (a directory in the Hugging Face layout) or `{ baseUrl }`;
 * - `{ files: { "config.json": File | Blob | Uint8Array | url, ... } }` (user-picked files).
 */
export function resolveModel(model) {
  if (typeof model === 'string') {
    if (/\.gguf(\?|$)/i.test(model)) return { kind: 'gguf', gguf: model, id: model };
    if (/^(https?:)?\/|^\.\.?\//.test(model) || model.endsWith('/')) return { kind: 'hf', baseUrl: model.endsWith('/') ? model : model + '/', id: model };
    if (/^[\w.-]+\/[\w.-]+$/.test(model)) return { kind: 'hf', baseUrl: `${HF}/${model}/resolve/main/`, id: model };
    throw new InvalidArgumentError(`cannot tell what model ${JSON.stringify(model)} is: give a Hugging Face repo id, a .gguf URL, a directory URL ending in /, or {files}`);
  }
  if (model && typeof model === 'object') {
    if (model.gguf) return { kind: 'gguf', gguf: model.gguf, mmproj: model.mmproj, sha256: model.sha256, id: model.id || (typeof model.gguf === 'string' ? model.gguf : 'gguf') };
    if (model.repo) return { kind: 'hf', baseUrl: `${model.host || HF}/${model.repo}/resolve/${model.revision || 'main'}/`, id: model.repo, sha256: model.sha256 };
    if (model.baseUrl) return { kind: 'hf', baseUrl: model.baseUrl.endsWith('/') ? model.baseUrl : model.baseUrl + '/', id: model.id || model.baseUrl, sha256: model.sha256 };
    if (model.files) return { kind: 'files', files: model.files, id: model.id || 'local files' };
  }
  throw new InvalidArgumentError('model must be a repo id, a URL, or {gguf, mmproj} / {repo} / {baseUrl} / {files}');
}

async function toBytes(x, opts) {
  if (x instanceof Uint8Array) return x;
  if (x instanceof ArrayBuffer) return new Uint8Array(x);
  if (typeof Blob !== 'undefined' && x instanceof Blob) {
    opts.onProgress?.({ phase: 'download', loaded: 0, total: x.size, file: x.name, text: `reading ${x.name || 'file'}` });
    const b = new Uint8Array(await x.arrayBuffer());
    opts.onProgress?.({ phase: 'download', loaded: x.size, total: x.size, file: x.name, text: `read ${x.name || 'file'}` });
    return b;
  }
  if (typeof x === 'string') return fetchBytes(new URL(x, globalThis.location?.href).href, opts);
  throw new InvalidArgumentError('a model file must be a URL, a File/Blob or a Uint8Array');
}

const HF_OPTIONAL = ['tokenizer_config.json', 'chat_template.jinja', 'chat_template.json', 'preprocessor_config.json', 'generation_config.json'];

// A LLaVA repo may keep its decoder as a GGUF file named by text_config.quantization_config.gguf_file (webvlm's
// offline VLM does); its tokenizer then comes from the GGUF metadata when there is no tokenizer.json.
function textGgufFile(configBytes) {
  let c;
  try { c = JSON.parse(new TextDecoder().decode(configBytes)); } catch { return null; }
  const q = c?.text_config?.quantization_config;
  const f = q?.quant_method === 'gguf' ? q.gguf_file : null;
  return typeof f === 'string' && /^[\w.-]+\.gguf$/.test(f) && !f.startsWith('.') ? f : null;
}

async function downloadHfLayout(r, opts) {
  const files = new Map();
  const get = (name, optional = false) =>
    fetchBytes(new URL(name, new URL(r.baseUrl, globalThis.location?.href)).href, { ...opts, optional, sha256: r.sha256?.[name] });
  const config = await get('config.json');
  files.set('config.json', config);
  const gguf = textGgufFile(config);
  const tokenizer = await get('tokenizer.json', !!gguf);
  if (tokenizer) files.set('tokenizer.json', tokenizer);
  if (gguf) files.set(gguf, await get(gguf));
  for (const n of HF_OPTIONAL) {
    const b = await get(n, true);
    if (b) files.set(n, b);
  }
  const single = await get('model.safetensors', true);
  if (single) {
    files.set('model.safetensors', single);
  } else {
    const index = await get('model.safetensors.index.json');
    files.set('model.safetensors.index.json', index);
    const shards = [...new Set(Object.values(JSON.parse(new TextDecoder().decode(index)).weight_map || {}))];
    for (const s of shards) files.set(s, await get(s));
  }
  return files;
}

/**
 * Creates an engine in this thread. `options`: `{ dtype, maxContext, onProgress, signal, cache, wasmUrl,
 * warmup }`. Progress reports are `{ phase: "download" | "upload" | "compile" | "ready", loaded, total, text }`.
 */
export async function createEngine(model, options = {}) {
  const onProgress = options.onProgress;
  const warnings = [];
  const onWarning = (e) => {
    warnings.push(e);
    onProgress?.({ phase: 'warning', loaded: 0, total: 0, text: e.message, error: e });
  };
  if (typeof navigator === 'undefined' || !navigator.gpu) {
    throw new WebGPUNotAvailableError('this browser has no WebGPU (navigator.gpu is missing); use a recent Chrome/Edge, or Firefox/Safari with WebGPU enabled');
  }
  const r = resolveModel(model);
  const fopts = { onProgress, signal: options.signal, cache: options.cache !== false, onWarning };
  const t0 = performance.now();
  await initRuntime(options);
  let inner;
  try {
    const progress = (loaded, total) =>
      onProgress?.({ phase: 'upload', loaded, total, text: `uploading weights to the GPU: ${(loaded / 1048576).toFixed(1)} / ${(total / 1048576).toFixed(1)} MB` });
    const wopts = { dtype: options.dtype, maxContext: options.maxContext, onProgress: progress };
    if (r.kind === 'gguf') {
      const gguf = await toBytes(r.gguf, { ...fopts, sha256: r.sha256?.gguf });
      const mmproj = r.mmproj ? await toBytes(r.mmproj, { ...fopts, sha256: r.sha256?.mmproj }) : undefined;
      if (options.signal?.aborted) throw new CancelledError('load cancelled');
      inner = await WebvlmEngine.loadGguf(gguf, mmproj, wopts);
    } else {
      let files;
      if (r.kind === 'hf') files = await downloadHfLayout(r, fopts);
      else {
        files = new Map();
        for (const [name, v] of Object.entries(r.files)) files.set(name, await toBytes(v, fopts));
      }
      if (options.signal?.aborted) throw new CancelledError('load cancelled');
      inner = await WebvlmEngine.loadFiles(files, wopts);
    }
  } catch (e) {
    throw toWebvlmError(e);
  }
  const engine = new Engine(inner, r.id, warnings);
  const info = inner.adapterInfo();
  if (!info.shaderF16) {
    // not an error: every kernel has an f32 path, and f16 weights are unpacked to f32 inside the kernels
    const note = new MissingFeatureError(
      `this adapter has no shader-f16; computing in f32${options.dtype === 'f16' ? ' (f16 weights are unpacked to f32 in the kernels)' : ''}`,
      { feature: 'shader-f16' },
    );
    engine.notes = [note.message];
    onProgress?.({ phase: 'compile', loaded: 0, total: 1, text: note.message });
  }
  if (options.warmup !== false) {
    onProgress?.({ phase: 'compile', loaded: 0, total: 1, text: 'compiling GPU kernels' });
    try {
      await inner.generate([{ role: 'user', content: 'Hi' }], [], { maxTokens: 2 });
    } catch (e) {
      // nobody gets this engine: free its GPU buffers now rather than whenever the wasm object is collected
      inner.free();
      throw toWebvlmError(e);
    }
    onProgress?.({ phase: 'compile', loaded: 1, total: 1, text: 'kernels compiled' });
  }
  engine.loadMs = performance.now() - t0;
  onProgress?.({ phase: 'ready', loaded: 1, total: 1, text: `ready in ${(engine.loadMs / 1000).toFixed(1)} s` });
  return engine;
}

/**
 * The base URL of a search/v1 server: a relative one is resolved against this document (the page; in a worker, the
 * worker script: WorkerEngine resolves it on the page's side first), like model URLs; none → this origin.
 */
export function searchBase(url) {
  if (!url) return globalThis.location?.origin;
  try {
    return new URL(String(url), globalThis.location?.href).href;
  } catch {
    return String(url); // not a URL even here: the pipeline reports it
  }
}

let nextId = 0;
const newId = () => `chatcmpl-${Date.now().toString(36)}${(nextId++).toString(36)}`;

/** Request fields → the wasm generate options. */
export function generationOptions(req) {
  return {
    maxTokens: req.max_tokens ?? req.max_completion_tokens ?? req.maxTokens,
    temperature: req.temperature,
    topK: req.top_k ?? req.topK,
    topP: req.top_p ?? req.topP,
    repetitionPenalty: req.repetition_penalty ?? req.repetitionPenalty,
    seed: req.seed,
  };
}

/**
 * Runs one request against `generateFn(messages, images, options, onText, signal)`, producing OpenAI-style
 * results: an async iterable of chunks when `req.stream`, else one completion. Shared by the in-thread engine and
 * the worker engine.
 */
export function completions(modelId, generateFn, req) {
  const id = newId();
  const created = Math.floor(Date.now() / 1000);
  const base = { id, created, model: modelId };
  const finalChunk = (res) => ({
    ...base,
    object: 'chat.completion.chunk',
    choices: [{ index: 0, delta: {}, finish_reason: res.finishReason }],
    usage: { prompt_tokens: res.usage.promptTokens, completion_tokens: res.usage.completionTokens, total_tokens: res.usage.totalTokens },
    webvlm: res.stats,
  });
  if (!req.stream) {
    return (async () => {
      const res = await generateFn(req, null);
      return {
        ...base,
        object: 'chat.completion',
        choices: [{ index: 0, message: { role: 'assistant', content: res.text }, finish_reason: res.finishReason }],
        usage: { prompt_tokens: res.usage.promptTokens, completion_tokens: res.usage.completionTokens, total_tokens: res.usage.totalTokens },
        webvlm: res.stats,
      };
    })();
  }
  // a push queue turned into an async iterator; leaving the loop early aborts generation
  const ctrl = new AbortController();
  const forward = () => ctrl.abort();
  if (req.signal) {
    if (req.signal.aborted) ctrl.abort();
    else req.signal.addEventListener('abort', forward, { once: true });
  }
  const queue = [];
  let wake = null;
  let finished = false;
  let failure = null;
  const push = (x) => {
    queue.push(x);
    wake?.();
  };
  let first = true;
  const run = generateFn({ ...req, signal: ctrl.signal }, (text) => {
    const delta = first ? { role: 'assistant', content: text } : { content: text };
    first = false;
    push({ ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: null }] });
  }).then(
    (res) => {
      push(finalChunk(res));
      finished = true;
      wake?.();
    },
    (e) => {
      failure = toWebvlmError(e);
      finished = true;
      wake?.();
    },
  );
  run.catch(() => {});
  // the caller's signal only matters while this runs: one reused across requests keeps no listener of it
  run.then(() => req.signal?.removeEventListener('abort', forward));
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    async next() {
      for (;;) {
        if (queue.length) return { value: queue.shift(), done: false };
        if (failure) {
          const f = failure;
          failure = null;
          throw f;
        }
        if (finished) return { value: undefined, done: true };
        await new Promise((r) => (wake = r));
        wake = null;
      }
    },
    async return() {
      ctrl.abort();
      await run;
      return { value: undefined, done: true };
    },
    /** Stops generation; the iterator then ends with a `finish_reason: "cancelled"` chunk. */
    abort() {
      ctrl.abort();
    },
  };
}

/** An engine running in this thread. */
export class Engine {
  constructor(inner, modelId, warnings = []) {
    this._inner = inner;
    this.modelId = modelId;
    this.warnings = warnings;
    /** Informational notes of the load (e.g. shader-f16 missing → f32 compute). */
    this.notes = [];
    this._busy = Promise.resolve();
    this.chat = { completions: { create: (req) => completions(this.modelId, (r, onText) => this._generate(r, onText), req) } };
  }

  /** Whether the model takes images. */
  get isVlm() {
    return this._inner.isVlm;
  }

  adapterInfo() {
    return this._inner.adapterInfo();
  }

  /** Bytes, timings and wasm memory of the load. */
  loadReport() {
    return this._inner.loadReport();
  }

  /** Starts timing every GPU dispatch (timestamp queries; slower while on). MissingFeatureError without them. */
  async startProfiling() {
    try {
      this._inner.startProfiling();
    } catch (e) {
      throw toWebvlmError(e);
    }
  }

  /** Stops profiling: GPU milliseconds per kernel since startProfiling, largest first. */
  async stopProfiling() {
    try {
      return await this._inner.stopProfiling();
    } catch (e) {
      throw toWebvlmError(e);
    }
  }

  async _generate(req, onText) {
    const { messages, images } = splitMessages(req.messages);
    const bytes = [];
    for (const im of images) bytes.push(await imageBytes(im, { signal: req.signal }));
    // one generation at a time per engine
    const prev = this._busy;
    let release;
    this._busy = new Promise((r) => (release = r));
    await prev;
    try {
      return await this._inner.generate(messages, bytes, generationOptions(req), onText || undefined, req.signal || undefined);
    } catch (e) {
      throw toWebvlmError(e);
    } finally {
      release();
    }
  }

  /**
   * Runs the Rust pipeline (caption → search query → search/v1 retrieval → answer citing [n]) with this engine.
   * `generator: {url, model?, apiKey?}` sends the answer step to a remote OpenAI-compatible endpoint instead
   * (this engine answers when it fails before any text, unless `config.fallback_to_local` is false).
   * `onEvent` gets `{type: "step", entry}` per finished step and `{type: "text", text}` per answer piece.
   */
  async runPipeline({ question, image, arm, k, tags, ocrText, searchUrl, config, generator, signal } = {}, onEvent) {
    const bytes = image ? await imageBytes(image, { signal }) : undefined;
    const prev = this._busy;
    let release;
    this._busy = new Promise((r) => (release = r));
    await prev;
    try {
      return await this._inner.runPipeline({ question, arm, k, tags, ocrText }, bytes, { searchUrl: searchBase(searchUrl), config, generator }, onEvent || undefined, signal || undefined);
    } catch (e) {
      throw toWebvlmError(e);
    } finally {
      release();
    }
  }

  /**
   * Side-by-side evaluation on a small set, in the browser: both pipeline arms (legacy, vlm) on every item with
   * the same retrieval endpoint, answers at temperature 0 — the records and summary `webvlm eval` writes (without
   * a judge), plus its HTML report. items: [{id, image, question, answers, gold_doc_ids, tags?, ocr_text?}].
   */
  async evaluate(items, { searchUrl, k = 5, seed = 0, config = {}, generator, signal, onRecord } = {}) {
    if (!Array.isArray(items) || items.length === 0) throw new InvalidArgumentError('evaluate() needs a non-empty array of items');
    const cfg = { ...config, answer: { ...(config.answer || {}), temperature: 0 } };
    const records = [];
    for (const it of items) {
      const rec = { id: String(it.id), image: typeof it.image === 'string' ? it.image : '', question: it.question,
        answers: it.answers || [], gold_doc_ids: it.gold_doc_ids || [], judge: null };
      for (const arm of ['legacy', 'vlm']) {
        // each arm encodes the image itself (else the VLM arm reuses the legacy arm's features and looks cheaper)
        this._inner?.clearImageCache();
        const t0 = performance.now();
        const r = await this.runPipeline({ question: it.question, image: it.image, arm, k, tags: it.tags, ocrText: it.ocr_text, searchUrl, config: cfg, generator, signal });
        // the steps that failed (a retrieval timeout scores as a miss): counted per arm in the summary
        const errors = r.trace.filter((t) => t.error).map((t) => `${t.step}: ${t.error}`);
        rec[arm] = { query: r.query, retrieved_ids: r.documents.map((d) => d.id), answer: r.answer, ms: performance.now() - t0, errors };
      }
      records.push(rec);
      onRecord?.(rec);
    }
    const json = JSON.stringify(records);
    try {
      return { records, summary: JSON.parse(summarizeEval(json, k, seed)), reportHtml: evalReportHtml(json, k, seed, `webvlm side-by-side: VLM rephraser vs legacy text-only rephraser (${records.length} items)`) };
    } catch (e) {
      throw toWebvlmError(e);
    }
  }

  /** Frees the GPU buffers of this engine. */
  dispose() {
    this._inner?.free();
    this._inner = null;
  }
}
