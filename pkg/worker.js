// The webvlm Web Worker: hosts one engine; speaks the protocol of src/worker_client.js.
//   in:  {id, type: "load", model, options} | {id, type: "generate" | "pipeline", request}
//        | {id, type: "evaluate", items, options} | {id, type: "startProfiling" | "stopProfiling"}
//        | {type: "abort", target} (a running call, by id) | {type: "abortLoad"} (the running load)
//   out: {id, type: "progress" | "text" | "event" | "done" | "error", ...}
import { createEngine } from './src/engine.js';
import { serializeError } from './src/errors.js';

let engine = null;
const aborts = new Map();
let loadAbort = null;

const post = (m) => self.postMessage(m);

self.addEventListener('message', async (ev) => {
  const msg = ev.data;
  if (msg.type === 'abort') {
    aborts.get(msg.target)?.abort();
    return;
  }
  if (msg.type === 'abortLoad') {
    loadAbort?.abort();
    return;
  }
  const { id } = msg;
  try {
    if (msg.type === 'load') {
      engine?.dispose();
      engine = null;
      loadAbort = new AbortController();
      engine = await createEngine(msg.model, {
        ...msg.options,
        signal: loadAbort.signal,
        onProgress: (p) => post({ id, type: 'progress', progress: p.error ? { ...p, error: serializeError(p.error) } : p }),
      });
      post({ id, type: 'done', result: { modelId: engine.modelId, notes: engine.notes, adapterInfo: engine.adapterInfo(), loadReport: engine.loadReport() } });
    } else if (msg.type === 'pipeline') {
      if (!engine) throw Object.assign(new Error('no model is loaded'), { name: 'InvalidArgumentError' });
      const ctrl = new AbortController();
      aborts.set(id, ctrl);
      try {
        const result = await engine.runPipeline({ ...msg.request, signal: ctrl.signal }, (event) => post({ id, type: 'event', event }));
        post({ id, type: 'done', result });
      } finally {
        aborts.delete(id);
      }
    } else if (msg.type === 'evaluate') {
      if (!engine) throw Object.assign(new Error('no model is loaded'), { name: 'InvalidArgumentError' });
      const ctrl = new AbortController();
      aborts.set(id, ctrl);
      try {
        const result = await engine.evaluate(msg.items, { ...msg.options, signal: ctrl.signal, onRecord: (event) => post({ id, type: 'event', event }) });
        post({ id, type: 'done', result });
      } finally {
        aborts.delete(id);
      }
    } else if (msg.type === 'startProfiling' || msg.type === 'stopProfiling') {
      if (!engine) throw Object.assign(new Error('no model is loaded'), { name: 'InvalidArgumentError' });
      post({ id, type: 'done', result: await engine[msg.type]() });
    } else if (msg.type === 'generate') {
      if (!engine) throw Object.assign(new Error('no model is loaded'), { name: 'InvalidArgumentError' });
      const ctrl = new AbortController();
      aborts.set(id, ctrl);
      try {
        const result = await engine._generate({ ...msg.request, signal: ctrl.signal }, (text) => post({ id, type: 'text', text }));
        post({ id, type: 'done', result });
      } finally {
        aborts.delete(id);
      }
    }
  } catch (e) {
    post({ id, type: 'error', error: serializeError(e) });
  }
});
