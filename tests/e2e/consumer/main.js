// A page that uses the npm package the way a user does after `npm install webvlm` without a bundler: it imports
// the package entry from node_modules; the package finds its worker file and its .wasm relative to itself.
import {
  createEngine, createWorkerEngine, listCachedModels, clearCache, ImageError, CancelledError, WebvlmError, NetworkError,
} from '/node_modules/webvlm/index.js';

const files = Object.fromEntries(
  ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'preprocessor_config.json', 'model.safetensors'].map((f) => [f, `/fixtures/${f}`]),
);
const log = (s) => (document.getElementById('log').textContent += `\n${s}`);

async function dataUrl(path) {
  const blob = await (await fetch(path)).blob();
  return new Promise((r) => {
    const fr = new FileReader();
    fr.onload = () => r(fr.result);
    fr.readAsDataURL(blob);
  });
}

async function exercise(engine, label, out) {
  const image = await dataUrl('/fixtures/chelsea.png');
  const messages = [{ role: 'user', content: [{ type: 'image_url', image_url: { url: image } }, { type: 'text', text: 'What is in the image?' }] }];
  const chunks = [];
  for await (const c of engine.chat.completions.create({ messages, stream: true, max_tokens: 5 })) chunks.push(c);
  const last = chunks[chunks.length - 1];
  out[`${label}.stream`] = {
    chunks: chunks.length,
    object: chunks[0].object,
    finish: last.choices[0].finish_reason,
    usage: last.usage,
    text: chunks.map((c) => c.choices[0].delta.content || '').join(''),
  };
  const full = await engine.chat.completions.create({ messages, max_tokens: 3 });
  out[`${label}.completion`] = { object: full.object, content: full.choices[0].message.content, finish: full.choices[0].finish_reason, usage: full.usage };
  try {
    await engine.chat.completions.create({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,aGVsbG8=' } }, { type: 'text', text: '?' }] }] });
    out[`${label}.badImage`] = 'no error';
  } catch (e) {
    out[`${label}.badImage`] = { name: e.name, isImageError: e instanceof ImageError, isWebvlmError: e instanceof WebvlmError, message: e.message };
  }
  const ctrl = new AbortController();
  ctrl.abort();
  try {
    const r = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 20, signal: ctrl.signal });
    out[`${label}.aborted`] = r.choices[0].finish_reason;
  } catch (e) {
    out[`${label}.aborted`] = { name: e.name, isCancelled: e instanceof CancelledError };
  }
  out[`${label}.adapter`] = engine.adapterInfo().adapter;
  out[`${label}.loadReport`] = engine.loadReport();
}

const out = {};
try {
  await clearCache();
  const phases = new Set();
  const w = await createWorkerEngine({ files, id: 'tiny-idefics3' }, { maxContext: 256, onProgress: (p) => phases.add(p.phase) });
  out.workerPhases = [...phases];
  out.isVlm = w.isVlm;
  await exercise(w, 'worker', out);
  w.dispose();
  const e = await createEngine({ files, id: 'tiny-idefics3' }, { maxContext: 256, warmup: false });
  await exercise(e, 'page', out);
  e.dispose();
  out.cached = (await listCachedModels()).map((c) => [c.url.split('/').pop(), c.bytes, !!c.sha256]);
  try {
    await createEngine({ files: { ...files, 'tokenizer.json': '/fixtures/missing.json' } }, { warmup: false });
    out.missingFile = 'no error';
  } catch (err) {
    out.missingFile = { name: err.name, isNetworkError: err instanceof NetworkError, status: err.status };
  }
} catch (e) {
  out.error = `${e.name}: ${e.message}\n${e.stack}`;
}
log(JSON.stringify(out, null, 1));
window.__result = out;
