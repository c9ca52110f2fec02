// createWorkerEngine(): the same interface as createEngine(), with the engine in a Web Worker (pkg/worker.js),
// so loading and generation never block the page.

import { completions, resolveModel, searchBase } from './engine.js';
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

/**
 * Awaits `call`, running `onAbort` when `signal` aborts before it settles. The listener is removed when the call
 * settles, so a long-lived signal reused across calls collects no listeners and its abort reaches no finished call.
 */
async function untilSettled(call, signal, onAbort) {
  if (!signal) return call;
  if (signal.aborted) {
    onAbort();
    return call;
  }
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await call;
  } finally {
    signal.removeEventListener('abort', onAbort);
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

  /** `_call` whose AbortSignal cancels it in the worker while it runs (an abort message naming its id). */
  _callAbortable(type, payload, handlers, signal) {
    const id = this._next; // the id _call takes
    return untilSettled(this._call(type, payload, handlers), signal, () => this.worker.postMessage({ type: 'abort', target: id }));
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
    const res = await untilSettled(loading, options.signal, () => this.worker.postMessage({ type: 'abortLoad' }));
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
    return this._callAbortable('generate', { request: rest }, { onText: onText || undefined }, signal);
  }

  /**
   * As Engine.runPipeline, in the worker (the image is sent as bytes or a structured-cloneable Blob; a relative
   * image URL or searchUrl is resolved against the page, not the worker script).
   */
  async runPipeline(request = {}, onEvent) {
    const { signal, ...rest } = request;
    rest.searchUrl = searchBase(rest.searchUrl);
    if (rest.image) rest.image = await sendableImage(rest.image, signal);
    return this._callAbortable('pipeline', { request: rest }, { onEvent: onEvent || undefined }, signal);
  }

  /**
   * As Engine.evaluate, in the worker; `onRecord` gets each item's record as it finishes. Records name each image
   * as the caller did (a relative URL stays relative); the worker fetches it resolved against the page.
   */
  async evaluate(items, options = {}) {
    const { signal, onRecord, ...rest } = options;
    rest.searchUrl = searchBase(rest.searchUrl);
    let refs = [];
    if (Array.isArray(items)) {
      refs = items.map((it) => (typeof it?.image === 'string' ? it.image : undefined));
      items = await Promise.all(items.map(async (it) => (it && it.image ? { ...it, image: await sendableImage(it.image, signal) } : it)));
    }
    // records come in item order, one per item (see Engine.evaluate)
    const named = (rec, i) => (refs[i] === undefined ? rec : { ...rec, image: refs[i] });
    let n = 0;
    const res = await this._callAbortable('evaluate', { items, options: rest }, { onEvent: onRecord && ((rec) => onRecord(named(rec, n++))) }, signal);
    return { ...res, records: res.records.map(named) };
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
