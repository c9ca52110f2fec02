// createWorkerEngine(): the same interface as createEngine(), with the engine in a Web Worker (pkg/worker.js),
// so loading and generation never block the page.

import { completions, resolveModel } from './engine.js';
import { imageBytes } from './images.js';
import { toWebvlmError, InvalidArgumentError } from './errors.js';

// The worker resolves relative URLs against its own script (…/webvlm/worker.js), not the page: make every URL
// absolute here, against the page, so both engines fetch the same thing. data: URLs are left as they are (no need
// to copy a large one), and so is a string that is no URL at all (the worker reports it as createEngine would).
function absolute(u) {
  if (typeof u !== 'string' || u.startsWith('data:') || !globalThis.location) return u;
  try {
    return new URL(u, location.href).href;
  } catch {
    return u;
  }
}

/** Functions cannot cross postMessage: keep the callbacks here, send the rest (wasmUrl may be a URL object). */
function cloneableOptions(options) {
  const { onProgress, signal, worker, ...rest } = options;
  if (rest.wasmUrl) rest.wasmUrl = absolute(String(rest.wasmUrl));
  return rest;
}

/**
 * The model spec with its URLs made absolute; the id stays the one createEngine would give. A string that is not
 * a URL (a Hugging Face repo id) is kept; a bad spec fails here, as in createEngine.
 */
function absoluteModel(model) {
  const r = resolveModel(model);
  if (r.kind === 'gguf') return { ...(typeof model === 'object' ? model : {}), gguf: absolute(r.gguf), mmproj: absolute(r.mmproj), id: r.id };
  if (r.kind === 'files') return { ...model, files: Object.fromEntries(Object.entries(model.files).map(([k, v]) => [k, absolute(v)])) };
  const isUrl = typeof model === 'string' ? r.baseUrl.startsWith(model) : !model.repo;
  return isUrl ? { ...(typeof model === 'object' ? model : {}), baseUrl: absolute(r.baseUrl), id: r.id } : model;
}

/**
 * An image input as it can cross postMessage: relative URLs made absolute, and what structured clone refuses
 * (<img>, <canvas>, OffscreenCanvas, VideoFrame…) encoded to PNG bytes here, where those objects live.
 */
async function sendableImage(x, signal) {
  if (typeof x === 'string') return absolute(x);
  const cloneable = x == null || typeof x !== 'object' || x instanceof ArrayBuffer || ArrayBuffer.isView(x)
    || (typeof Blob !== 'undefined' && x instanceof Blob)
    || (typeof ImageBitmap !== 'undefined' && x instanceof ImageBitmap)
    || (typeof ImageData !== 'undefined' && x instanceof ImageData);
  if (cloneable) return x;
  try {
    return await imageBytes(x, { signal });
  } catch (e) {
    throw toWebvlmError(e); // a canvas error (e.g. an <img> not loaded yet) is a DOMException
  }
}

/** OpenAI-style messages with their image parts made sendable (see sendableImage). */
async function sendableMessages(messages, signal) {
  if (!Array.isArray(messages)) return messages; // the worker reports the error
  return Promise.all(messages.map(async (m) => {
    if (!Array.isArray(m?.content)) return m;
    const content = await Promise.all(m.content.map(async (p) => {
      if (p?.type === 'image_url') {
        const url = typeof p.image_url === 'string' ? p.image_url : p.image_url?.url;
        return { ...p, image_url: { ...(typeof p.image_url === 'object' ? p.image_url : {}), url: absolute(url) } };
      }
      if (p?.type === 'image') return { type: 'image', image: await sendableImage(p.image ?? p.url, signal) };
      return p;
    }));
    return { ...m, content };
  }));
}

export class WorkerEngine {
  constructor(worker, modelId) {
    this.worker = worker;
    this.modelId = modelId;
    this.warnings = [];
    this._pending = new Map();
    this._next = 1;
    this._info = null;
    worker.addEventListener('message', (ev) => this._onMessage(ev.data));
    worker.addEventListener('error', (ev) => {
      const err = toWebvlmError({ name: 'WebvlmError', message: `the webvlm worker failed: ${ev.message || 'error'}` });
      for (const p of this._pending.values()) p.reject(err);
      this._pending.clear();
    });
    this.chat = {
      completions: {
        create: (req) => completions(this.modelId, (r, onText) => this._generate(r, onText), req),
      },
    };
  }

  _call(type, payload, handlers = {}, transfer = []) {
    const id = this._next++;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject, ...handlers });
      try {
        this.worker.postMessage({ id, type, ...payload }, transfer);
      } catch (e) {
        // DataCloneError (a value structured clone refuses): nothing reached the worker, so no reply will come
        this._pending.delete(id);
        reject(toWebvlmError(e));
      }
    });
  }

  _onMessage(msg) {
    const p = this._pending.get(msg.id);
    if (!p) return;
    if (msg.type === 'progress') p.onProgress?.(msg.progress);
    else if (msg.type === 'text') p.onText?.(msg.text);
    else if (msg.type === 'event') p.onEvent?.(msg.event);
    else if (msg.type === 'done') {
      this._pending.delete(msg.id);
      p.resolve(msg.result);
    } else if (msg.type === 'error') {
      this._pending.delete(msg.id);
      p.reject(toWebvlmError(msg.error));
    }
  }

  async _load(model, options) {
    const loading = this._call('load', { model: absoluteModel(model), options: cloneableOptions(options) }, {
      onProgress: (pr) => {
        if (pr.phase === 'warning') this.warnings.push(toWebvlmError(pr.error));
        options.onProgress?.(pr.phase === 'warning' ? { ...pr, error: toWebvlmError(pr.error) } : pr);
      },
    });
    // the signal aborts the load while it runs (the worker gets abortLoad after load: messages keep their order)
    const { signal } = options;
    const abortLoad = () => this.worker.postMessage({ type: 'abortLoad' });
    if (signal?.aborted) abortLoad();
    else signal?.addEventListener('abort', abortLoad, { once: true });
    let res;
    try {
      res = await loading;
    } finally {
      signal?.removeEventListener('abort', abortLoad);
    }
    this._info = res;
    this.modelId = res.modelId;
    this.notes = res.notes || [];
    return this;
  }

  get isVlm() {
    return !!this._info?.loadReport?.isVlm;
  }

  adapterInfo() {
    return this._info?.adapterInfo;
  }

  loadReport() {
    return this._info?.loadReport;
  }

  startProfiling() {
    return this._call('startProfiling', {});
  }

  stopProfiling() {
    return this._call('stopProfiling', {});
  }

  async _generate(req, onText) {
    const { signal, ...rest } = req;
    rest.messages = await sendableMessages(rest.messages, signal);
    const p = this._call('generate', { request: rest }, { onText: onText || undefined });
    const id = this._next - 1;
    if (signal) {
      const abort = () => this.worker.postMessage({ type: 'abort', target: id });
      if (signal.aborted) abort();
      else signal.addEventListener('abort', abort, { once: true });
    }
    return p;
  }

  /** As Engine.runPipeline, in the worker (the image is sent as bytes or a structured-cloneable Blob). */
  async runPipeline(request = {}, onEvent) {
    const { signal, ...rest } = request;
    if (!rest.searchUrl && globalThis.location) rest.searchUrl = location.origin;
    if (rest.image) rest.image = await sendableImage(rest.image, signal);
    const p = this._call('pipeline', { request: rest }, { onEvent: onEvent || undefined });
    const id = this._next - 1;
    if (signal) {
      const abort = () => this.worker.postMessage({ type: 'abort', target: id });
      if (signal.aborted) abort();
      else signal.addEventListener('abort', abort, { once: true });
    }
    return p;
  }

  /** As Engine.evaluate, in the worker; `onRecord` gets each item's record as it finishes. */
  async evaluate(items, options = {}) {
    const { signal, onRecord, ...rest } = options;
    if (!rest.searchUrl && globalThis.location) rest.searchUrl = location.origin;
    if (Array.isArray(items)) items = await Promise.all(items.map(async (it) => (it && it.image ? { ...it, image: await sendableImage(it.image, signal) } : it)));
    const p = this._call('evaluate', { items, options: rest }, { onEvent: onRecord || undefined });
    const id = this._next - 1;
    if (signal) {
      const abort = () => this.worker.postMessage({ type: 'abort', target: id });
      if (signal.aborted) abort();
      else signal.addEventListener('abort', abort, { once: true });
    }
    return p;
  }

  /** Stops the worker (and frees its GPU memory). */
  dispose() {
    this.worker.terminate();
  }
}

/**
 * Creates an engine in a module Web Worker. `options` as for createEngine, plus `worker` (your own
 * `new Worker(new URL('webvlm/worker.js', import.meta.url), {type: 'module'})`, for bundlers).
 */
export async function createWorkerEngine(model, options = {}) {
  if (typeof Worker === 'undefined') throw new InvalidArgumentError('Web Workers are not available here; use createEngine');
  const worker = options.worker || new Worker(new URL('../worker.js', import.meta.url), { type: 'module', name: 'webvlm' });
  const engine = new WorkerEngine(worker, typeof model === 'string' ? model : 'model');
  try {
    return await engine._load(model, options);
  } catch (e) {
    if (!options.worker) worker.terminate();
    throw e;
  }
}
