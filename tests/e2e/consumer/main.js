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
  out[`${label}.cpuAdapter`] = engine.adapterInfo().cpuAdapter;
  const a = await navigator.gpu.requestAdapter();
  out.adapterInfo = [a.info.vendor, a.info.architecture, a.info.description].join(' ').toLowerCase();
  out[`${label}.loadReport`] = engine.loadReport();
}

/** A PNG whose header claims width × height (IDAT is a stub): the decoder must refuse it before allocating. */
function pngHeader(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (bytes) => {
    let c = 0xffffffff;
    for (const b of bytes) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const body = new Uint8Array([...new TextEncoder().encode(type), ...data]);
    const out = new Uint8Array(12 + data.length);
    const v = new DataView(out.buffer);
    v.setUint32(0, data.length);
    out.set(body, 4);
    v.setUint32(8 + data.length, crc(body));
    return out;
  };
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width);
  v.setUint32(4, height);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const parts = [new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', new Uint8Array([120, 156, 3, 0, 0, 0, 0, 1])), chunk('IEND', new Uint8Array())];
  return new Uint8Array(parts.flatMap((p) => [...p]));
}

/** What `f` resolves to, or the error it throws (one failing probe does not end the page's run). */
async function settled(f) {
  try {
    return await f();
  } catch (e) {
    return { error: `${e.name}: ${e.message}` };
  }
}

const out = {};
try {
  await clearCache();
  const phases = new Set();
  const w = await createWorkerEngine({ files, id: 'tiny-idefics3' }, { maxContext: 256, onProgress: (p) => phases.add(p.phase) });
  out.workerPhases = [...phases];
  out.isVlm = w.isVlm;
  await exercise(w, 'worker', out);
  // what the worker cannot take as it is, made sendable on the page's side: images structured clone refuses (<img>,
  // <canvas>, OffscreenCanvas → PNG bytes) and relative URLs (the worker's own base is /node_modules/webvlm/)
  const img = new Image();
  img.src = '/fixtures/chelsea.png';
  await img.decode();
  const canvas = Object.assign(document.createElement('canvas'), { width: 64, height: 48 });
  canvas.getContext('2d').drawImage(img, 0, 0, 64, 48);
  const offscreen = new OffscreenCanvas(32, 32);
  offscreen.getContext('2d').drawImage(img, 0, 0, 32, 32);
  const four = await w.chat.completions.create({ max_tokens: 2, messages: [{ role: 'user', content: [
    { type: 'image', image: img }, { type: 'image', image: canvas }, { type: 'image', image: offscreen },
    { type: 'image_url', image_url: { url: './fixtures/chelsea.png' } }, { type: 'text', text: 'Which differ?' }] }] });
  out.workerImages = { object: four.object, promptTokens: four.usage.prompt_tokens };
  // a request field no postMessage takes: a typed error, and nothing left waiting for a reply
  try {
    await w.chat.completions.create({ max_tokens: 2, messages: [{ role: 'user', content: 'Hi' }], user: () => 'not cloneable' });
    out.uncloneable = 'no error';
  } catch (err) {
    out.uncloneable = { name: err.name, pending: w._pending.size };
  }
  // a relative directory URL as the model, and a URL object as wasmUrl
  const rel = await createWorkerEngine('./fixtures/', { maxContext: 256, warmup: false, wasmUrl: new URL('./node_modules/webvlm/wasm/webvlm_bg.wasm', location.href) });
  out.workerRelative = { modelId: rel.modelId, object: (await rel.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 })).object };
  rel.dispose();
  // the load's signal aborts a download under way (this config.json takes 3 s to arrive, see startTestGenerator)
  const loadCtrl = new AbortController();
  const t0 = performance.now();
  setTimeout(() => loadCtrl.abort(), 300);
  try {
    await createWorkerEngine({ files: { ...files, 'config.json': `${new URLSearchParams(location.search).get('gen')}/slow/v1/search/config.json` } },
      { signal: loadCtrl.signal, cache: false, warmup: false });
    out.loadAborted = 'no error';
  } catch (err) {
    out.loadAborted = { name: err.name, message: err.message, ms: Math.round(performance.now() - t0) };
  }
  const events = [];
  const pr = await w.runPipeline({ question: 'What color is a stop sign?', image: '/fixtures/chelsea.png', k: 2,
    config: { caption_max_tokens: 4, rephrase_max_tokens: 4, answer: { max_new_tokens: 4 } } }, (e) => events.push(e.type === 'step' ? e.entry.step : 'text'));
  out.pipeline = { steps: pr.trace.map((t) => [t.step, t.via, !!t.error]), documents: pr.documents.length, query: pr.query, events, degraded: pr.degraded };
  // the legacy arm: a text-only rephraser that sees the caption, tags and OCR text, not the image
  const small = { caption_max_tokens: 4, rephrase_max_tokens: 4, answer: { max_new_tokens: 4 } };
  const lg = await w.runPipeline({ question: 'What color is a stop sign?', image: '/fixtures/chelsea.png', arm: 'legacy', tags: ['sign'], ocrText: 'STOP', k: 2, config: small });
  const reph = lg.trace.find((t) => t.step === 'rephrase');
  out.pipelineLegacy = { arm: lg.arm, steps: lg.trace.map((t) => [t.step, t.via, !!t.error]), documents: lg.documents.length, rephraseInput: reph?.input ?? '' };
  // retrieval down (the endpoint answers 404): the answer comes without sources and says so; the question is kept
  const dn = await w.runPipeline({ question: 'What color is a stop sign?', k: 2, searchUrl: `${location.origin}/no-such-search-server`, config: { ...small, retries: 0 } });
  out.pipelineDown = { question: dn.question, steps: dn.trace.map((t) => [t.step, t.via, !!t.error]), documents: dn.documents.length, degraded: dn.degraded };
  // retrieval that answers garbage, or too slowly: answered without sources, said so
  const params0 = new URLSearchParams(location.search);
  for (const [key, mode, extra] of [['retrievalGarbage', 'garbage', {}], ['retrievalSlow', 'slow', { timeouts: { retrieve_ms: 500 } }]]) {
    const r = await w.runPipeline({ question: 'What color is a stop sign?', k: 2, searchUrl: `${params0.get('gen')}/${mode}`, config: { ...small, retries: 0, ...extra } });
    out[key] = { question: r.question, documents: r.documents.length, degraded: r.degraded, retrieve: r.trace.filter((t) => t.step === 'retrieve').map((t) => t.error), answered: r.trace.some((t) => t.step === 'generate' && !t.error) };
  }
  // a remote OpenAI-compatible generator (tests/e2e/lib.mjs startTestGenerator, another origin: CORS + CSP)
  const params = new URLSearchParams(location.search);
  const gen = params.get('gen');
  const q = 'What color is a stop sign?';
  const summary = (r) => ({ question: r.question, answer: r.answer, degraded: r.degraded, documents: r.documents.map((d) => [d.id, d.title]),
    citations: r.citations.map((c) => [c.n, c.id]), generate: r.trace.filter((t) => t.step === 'generate').map((t) => [t.via, t.error]) });
  const remoteText = [];
  const ok = await w.runPipeline({ question: q, k: 2, config: small, generator: { url: `${gen}/ok`, model: 'test-model', apiKey: 'sk-test' } },
    (e) => e.type === 'text' && remoteText.push(e.text));
  out.remoteOk = { ...summary(ok), streamed: remoteText };
  // 500 with an error body, one bounded retry, then the local engine answers (fallback_to_local is the default)
  out.remoteFail = summary(await w.runPipeline({ question: q, k: 2, config: { ...small, retries: 1, retry_backoff_ms: 10 }, generator: { url: `${gen}/fail` } }));
  // headers, then nothing: the step's deadline cancels it and the local engine answers
  out.remoteStall = summary(await w.runPipeline({ question: q, k: 2, config: { ...small, timeouts: { generate_ms: 1500 } }, generator: { url: `${gen}/stall/v1` } }));
  // nothing listens, no fallback: no answer, and the result says why; the question is kept
  out.remoteDown = summary(await w.runPipeline({ question: q, k: 2, config: { ...small, retries: 0, fallback_to_local: false }, generator: { url: params.get('down') } }));
  try {
    await w.runPipeline({ question: q, generator: { url: 'not a url' } });
    out.remoteBadUrl = 'no error';
  } catch (e) {
    out.remoteBadUrl = { name: e.name, message: e.message };
  }
  // side-by-side evaluation of both arms on a small set, in the worker
  const streamed = [];
  const ev = await w.evaluate([
    { id: 'cat', image: '/fixtures/chelsea.png', question: 'What animal is this?', answers: ['cat'], gold_doc_ids: ['domestic-cat'] },
    { id: 'sign', image: '/fixtures/chelsea.png', question: 'What color is a stop sign?', answers: ['red'], gold_doc_ids: ['stop-sign'], tags: ['sign'], ocr_text: 'STOP' },
  ], { k: 2, seed: 3, config: small, onRecord: (r) => streamed.push(r.id) });
  out.evaluate = { ids: ev.records.map((r) => r.id), streamed, n: ev.summary.n, k: ev.summary.k,
    arms: ev.records.map((r) => [typeof r.legacy.query, r.legacy.retrieved_ids.length, typeof r.vlm.answer, r.vlm.ms > 0]),
    legacyRecall: ev.summary.legacy.recall_at_k, mcnemar: ev.summary.mcnemar_exact_match.p_value,
    report: [ev.reportHtml.includes('<h1>'), ev.reportHtml.includes('What animal is this?'), /<script/i.test(ev.reportHtml)] };
  // a relative searchUrl is the page's ('.' → this origin's /v1/search), not the worker script's directory; evaluate's
  // records name the image as given (a relative URL), while the worker fetches it made absolute
  out.relativeSearch = await settled(async () => {
    const r = await w.runPipeline({ question: 'What color is a stop sign?', k: 2, searchUrl: '.', config: { ...small, retries: 0 } });
    return { documents: r.documents.length, retrieve: r.trace.filter((t) => t.step === 'retrieve').map((t) => t.error) };
  });
  out.evalRelative = await settled(async () => {
    const images = [];
    const er = await w.evaluate([{ id: 'rel', image: './fixtures/chelsea.png', question: 'What color is a stop sign?', answers: ['red'] }],
      { k: 2, searchUrl: '.', config: { ...small, retries: 0 }, onRecord: (r) => images.push(r.image) });
    return { image: er.records[0].image, streamed: images, retrieved: er.records[0].vlm.retrieved_ids.length };
  });
  // one AbortSignal reused across calls: each call's abort listener goes when the call settles, so none pile up,
  // and aborting the signal afterwards sends the worker no abort for a finished call
  out.sharedSignal = await settled(async () => {
    const shared = new AbortController();
    const live = new Set();
    const { addEventListener: add, removeEventListener: remove } = shared.signal;
    shared.signal.addEventListener = function (type, fn, opts) {
      if (type === 'abort') live.add(fn);
      return add.call(this, type, fn, opts);
    };
    shared.signal.removeEventListener = function (type, fn, opts) {
      if (type === 'abort') live.delete(fn);
      return remove.call(this, type, fn, opts);
    };
    const signal = shared.signal;
    const hi = [{ role: 'user', content: 'Hi' }];
    await w.chat.completions.create({ messages: hi, max_tokens: 2, signal });
    await w.chat.completions.create({ messages: hi, max_tokens: 2, signal });
    for await (const c of w.chat.completions.create({ messages: hi, max_tokens: 2, stream: true, signal })) void c;
    await w.runPipeline({ question: 'What color is a stop sign?', k: 1, config: { ...small, retries: 0 }, signal });
    await w.evaluate([{ id: 'one', question: 'What color is a stop sign?', answers: ['red'] }], { k: 1, config: { ...small, retries: 0 }, signal });
    const listeners = live.size;
    const posted = [];
    const post = w.worker.postMessage;
    w.worker.postMessage = function (m, t) {
      posted.push(m.type);
      return post.call(this, m, t);
    };
    shared.abort();
    w.worker.postMessage = post;
    return { calls: 5, listeners, aborts: posted.filter((t) => t === 'abort').length };
  });
  w.dispose();
  out.cached = (await listCachedModels()).map((c) => [c.url.split('/').pop(), c.bytes, !!c.sha256]);
  // a full cache: every write fails as a quota error; the load must still succeed and say so
  await clearCache();
  const put = Cache.prototype.put;
  Cache.prototype.put = () => Promise.reject(new DOMException('quota exceeded (simulated)', 'QuotaExceededError'));
  const warned = [];
  const e = await createEngine({ files, id: 'tiny-idefics3' }, { maxContext: 256, warmup: false, onProgress: (p) => p.phase === 'warning' && warned.push(p.text) });
  Cache.prototype.put = put;
  out.quota = { warnings: e.warnings.map((w) => w.name), progressWarnings: warned.length, first: e.warnings[0]?.message };
  await exercise(e, 'page', out);
  try {
    await e.chat.completions.create({ messages: [{ role: 'user', content: [{ type: 'image', image: pngHeader(20000, 20000) }, { type: 'text', text: '?' }] }], max_tokens: 2 });
    out.hugeImage = 'no error';
  } catch (err) {
    out.hugeImage = { name: err.name, message: err.message };
  }
  // the in-page engine resolves a relative searchUrl against the page too
  out.pageRelativeSearch = await settled(async () => {
    const r = await e.runPipeline({ question: 'What color is a stop sign?', k: 2, searchUrl: '.', config: { caption_max_tokens: 4, rephrase_max_tokens: 4, answer: { max_new_tokens: 4 }, retries: 0 } });
    return { documents: r.documents.length, retrieve: r.trace.filter((t) => t.step === 'retrieve').map((t) => t.error) };
  });
  e.dispose();
  try {
    await createEngine({ files: { ...files, 'tokenizer.json': '/fixtures/missing.json' } }, { warmup: false });
    out.missingFile = 'no error';
  } catch (err) {
    out.missingFile = { name: err.name, isNetworkError: err instanceof NetworkError, status: err.status };
  }
  // a model host on another origin that sends no CORS headers: the browser blocks it; a typed, explanatory error
  try {
    await createEngine({ files: { ...files, 'config.json': `${new URLSearchParams(location.search).get('gen')}/nocors/config.json` } }, { warmup: false, cache: false });
    out.corsBlocked = 'no error';
  } catch (err) {
    out.corsBlocked = { name: err.name, isNetworkError: err instanceof NetworkError, message: err.message };
  }
  // and the page is still usable: the worker engine from before was disposed, a fresh in-page load works
  const again = await createEngine({ files, id: 'tiny-idefics3' }, { maxContext: 256, warmup: false });
  out.afterErrors = (await again.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 })).object;
  again.dispose();
} catch (e) {
  out.error = `${e.name}: ${e.message}\n${e.stack}`;
}
log(JSON.stringify(out, null, 1));
window.__result = out;
