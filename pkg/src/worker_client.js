// createWorkerEngine(): the same interface as createEngine(), with the engine in a Web Worker (pkg/worker.js),
// so loading and generation never block the page.

import { completions } from './engine.js';
import { toWebvlmError, InvalidArgumentError } from './errors.js';

/** Functions cannot cross postMessage: keep the callbacks here, send the rest. */
function cloneableOptions(options) {
  const { onProgress, signal, worker, ...rest } = options;
  return rest;
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
      this.worker.postMessage({ id, type, ...payload }, transfer);
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
    const res = await this._call('load', { model, options: cloneableOptions(options) }, {
      onProgress: (pr) => {
        if (pr.phase === 'warning') this.warnings.push(toWebvlmError(pr.error));
        options.onProgress?.(pr.phase === 'warning' ? { ...pr, error: toWebvlmError(pr.error) } : pr);
      },
    });
    this._info = res;
    this.modelId = res.modelId;
    this.notes = res.notes || [];
    if (options.signal) options.signal.addEventListener('abort', () => this.worker.postMessage({ type: 'abortLoad' }), { once: true });
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

  _generate(req, onText) {
    const { signal, ...rest } = req;
    let id;
    const p = this._call('generate', { request: rest }, { onText: onText || undefined });
    id = this._next - 1;
    if (signal) {
      const abort = () => this.worker.postMessage({ type: 'abort', target: id });
      if (signal.aborted) abort();
      else signal.addEventListener('abort', abort, { once: true });
    }
    return p;
  }

  /** As Engine.runPipeline, in the worker (the image is sent as bytes or a structured-cloneable Blob). */
  runPipeline(request = {}, onEvent) {
    const { signal, ...rest } = request;
    if (!rest.searchUrl && globalThis.location) rest.searchUrl = location.origin;
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
  evaluate(items, options = {}) {
    const { signal, onRecord, ...rest } = options;
    if (!rest.searchUrl && globalThis.location) rest.searchUrl = location.origin;
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
