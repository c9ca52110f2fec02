// The npm package as a user gets it: `npm pack` pkg/, `npm install` the tarball into a fresh app, serve the app
// (with webvlm-server's CSP) and run tests/e2e/consumer/main.js in headless Chromium: exports, types file,
// worker file and wasm path resolution from node_modules, OpenAI-style streaming, typed errors, cache listing.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import { ROOT, startServer, startTestGenerator, launchBrowser, watchPage, check, failed, assert } from './lib.mjs';

const APP = path.join(ROOT, 'target/e2e/consumer-app');
rmSync(APP, { recursive: true, force: true });
mkdirSync(path.join(APP, 'fixtures'), { recursive: true });

const tgz = execFileSync('npm', ['pack', '--silent', '--pack-destination', APP], { cwd: path.join(ROOT, 'pkg') }).toString().trim().split('\n').pop();
writeFileSync(path.join(APP, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
execFileSync('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--offline', `./${tgz}`], { cwd: APP, stdio: 'inherit' });
for (const f of ['index.html', 'main.js']) cpSync(path.join(ROOT, 'tests/e2e/consumer', f), path.join(APP, f));
const eng = path.join(ROOT, 'tests/fixtures/models/idefics3_engine');
for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'preprocessor_config.json']) cpSync(path.join(eng, f), path.join(APP, 'fixtures', f));
cpSync(path.join(ROOT, 'tests/fixtures/models/idefics3/model.safetensors'), path.join(APP, 'fixtures/model.safetensors'));
cpSync(path.join(ROOT, 'tests/fixtures/images/chelsea.png'), path.join(APP, 'fixtures/chelsea.png'));

await check('published shape: exports, types, worker, wasm in the tarball', async () => {
  const installed = path.join(APP, 'node_modules/webvlm');
  const pj = JSON.parse(readFileSync(path.join(installed, 'package.json'), 'utf8'));
  for (const f of [pj.types, pj.exports['.'].import, pj.exports['./worker.js'], 'wasm/webvlm_bg.wasm', 'wasm/webvlm.js']) {
    assert(existsSync(path.join(installed, f)), `${f} is in the package`);
  }
  const resolved = execFileSync('node', ['--input-type=module', '-e', "console.log(import.meta.resolve('webvlm'))"], { cwd: APP }).toString().trim();
  assert(resolved.endsWith('node_modules/webvlm/index.js'), `import 'webvlm' resolves to ${resolved}`);
  const dts = readFileSync(path.join(installed, pj.types), 'utf8');
  for (const name of ['createEngine', 'createWorkerEngine', 'listCachedModels', 'clearCache', 'LimitsError', 'ChatCompletionChunk']) assert(dts.includes(name), `index.d.ts declares ${name}`);
});

const gen = await startTestGenerator({ answer: 'A stop sign is red [1].' });
// a port where nothing listens: a remote generator that is down
const probe = http.createServer();
await new Promise((r) => probe.listen(0, '127.0.0.1', r));
const downUrl = `http://127.0.0.1:${probe.address().port}`;
await new Promise((r) => probe.close(r));
const server = await startServer({ www: APP, connectSrc: [gen.url, downUrl] });
const browser = await launchBrowser();
const page = await browser.newPage();
const errors = watchPage(page);
try {
  await check('consumer page: worker + in-page engine, streaming, typed errors, cache', async () => {
    await page.goto(`${server.url}/?gen=${encodeURIComponent(gen.url)}&down=${encodeURIComponent(downUrl)}`);
    await page.waitForFunction(() => window.__result, null, { timeout: 5 * 60000 });
    const r = await page.evaluate(() => window.__result);
    console.log(JSON.stringify(r));
    assert(!r.error, r.error);
    assert(r.isVlm === true, 'tiny Idefics3 is a VLM');
    for (const p of ['download', 'upload', 'compile']) assert(r.workerPhases.includes(p), `progress phase ${p}`);
    for (const l of ['worker', 'page']) {
      const s = r[`${l}.stream`];
      assert(s.object === 'chat.completion.chunk' && s.chunks >= 1 && s.usage?.completion_tokens >= 1, `${l}: stream ${JSON.stringify(s)}`);
      assert(r[`${l}.completion`].object === 'chat.completion', `${l}: completion`);
      assert(r[`${l}.badImage`].isImageError, `${l}: bad image → ImageError: ${JSON.stringify(r[`${l}.badImage`])}`);
      assert(r[`${l}.aborted`].isCancelled || r[`${l}.aborted`] === 'cancelled', `${l}: aborted → ${JSON.stringify(r[`${l}.aborted`])}`);
    }
    const one = r['worker.completion'].usage.prompt_tokens;
    assert(r.workerImages.object === 'chat.completion' && r.workerImages.promptTokens > one, `worker: <img>, <canvas>, OffscreenCanvas and a relative image_url (prompt ${one} tokens with one image): ${JSON.stringify(r.workerImages)}`);
    assert(r.uncloneable.name === 'InvalidArgumentError' && r.uncloneable.pending === 0, `worker: a request postMessage refuses → InvalidArgumentError, no pending call: ${JSON.stringify(r.uncloneable)}`);
    assert(r.workerRelative.modelId === './fixtures/' && r.workerRelative.object === 'chat.completion', `worker: relative model URL, URL object wasmUrl: ${JSON.stringify(r.workerRelative)}`);
    assert(r.loadAborted.name === 'CancelledError' && r.loadAborted.ms < 3000, `worker: aborting the load's signal stops its download: ${JSON.stringify(r.loadAborted)}`);
    assert(r.quota.warnings.length >= 1 && r.quota.warnings.every((n) => n === 'CacheError') && r.quota.progressWarnings >= 1, `quota → CacheError warnings: ${JSON.stringify(r.quota)}`);
    for (const l of ['worker', 'page']) {
      const want = r.adapterInfo.includes('swiftshader');
      assert(r[`${l}.cpuAdapter`] === want, `${l}: cpuAdapter ${r[`${l}.cpuAdapter`]} for adapter "${r.adapterInfo}" (want ${want})`);
    }
    assert(r.hugeImage.name === 'ImageError', `20000×20000 image → ImageError: ${JSON.stringify(r.hugeImage)}`);
    const pl = r.pipeline;
    assert(['caption', 'rephrase', 'retrieve', 'generate'].every((s) => pl.steps.some((x) => x[0] === s)), `pipeline trace: ${JSON.stringify(pl)}`);
    assert(pl.documents >= 1 && pl.events.includes('retrieve'), `pipeline retrieved documents through /v1/search: ${JSON.stringify(pl)}`);
    const lg = r.pipelineLegacy;
    assert(lg.arm === 'legacy' && ['caption', 'rephrase', 'retrieve', 'generate'].every((s) => lg.steps.some((x) => x[0] === s)), `legacy arm trace: ${JSON.stringify(lg)}`);
    assert(lg.rephraseInput.includes('STOP') && lg.rephraseInput.includes('sign') && !lg.rephraseInput.includes('<image>'), `the legacy rephraser sees tags and OCR text, not the image: ${lg.rephraseInput}`);
    const dn = r.pipelineDown;
    const retr = dn.steps.find((x) => x[0] === 'retrieve');
    assert(dn.question === 'What color is a stop sign?' && dn.documents === 0 && retr && retr[2], `retrieval down: error in the trace, no documents: ${JSON.stringify(dn)}`);
    assert(/no sources/.test(dn.degraded || '') && dn.steps.some((x) => x[0] === 'generate' && !x[2]), `retrieval down: answered without sources and says so: ${JSON.stringify(dn)}`);
    const rg = r.retrievalGarbage;
    assert(rg.documents === 0 && /not JSON|search\/v1/.test(rg.retrieve[0] || '') && /no sources/.test(rg.degraded || '') && rg.answered, `retrieval returns HTML → no sources, said so: ${JSON.stringify(rg)}`);
    const rs = r.retrievalSlow;
    assert(rs.documents === 0 && /500 ms/.test(rs.retrieve[0] || '') && /no sources/.test(rs.degraded || '') && rs.answered, `retrieval slower than its timeout → no sources, said so: ${JSON.stringify(rs)}`);
    // remote generator: streamed over SSE (CRLF, keep-alive, split event), CORS, request as OpenAI's
    const ok = r.remoteOk;
    assert(ok.answer === 'A stop sign is red [1].' && ok.streamed.join('') === ok.answer && ok.streamed.length >= 2, `remote answer streamed: ${JSON.stringify(ok)}`);
    assert(ok.degraded === null && ok.generate.length === 1 && ok.generate[0][0].includes(gen.url) && ok.generate[0][1] === null, `remote generate step in the trace: ${JSON.stringify(ok)}`);
    assert(ok.documents.length >= 1 && JSON.stringify(ok.citations) === JSON.stringify([[1, ok.documents[0][0]]]), `[1] maps to the first document: ${JSON.stringify(ok)}`);
    const okReq = gen.requests.filter((x) => x[0] === 'ok');
    assert(okReq.length === 1, `one request to the remote: ${okReq.length}`);
    const [, hdr, body] = okReq[0];
    assert(body.model === 'test-model' && body.stream === true && hdr.authorization === 'Bearer sk-test', `request: model, stream, bearer key: ${JSON.stringify([body.model, body.stream, hdr.authorization])}`);
    const prompt = body.messages.map((m) => (typeof m.content === 'string' ? m.content : JSON.stringify(m.content))).join('\n');
    assert(prompt.includes('What color is a stop sign?') && prompt.includes(ok.documents[0][1]), `the remote saw the question and the retrieved documents: ${prompt.slice(0, 400)}`);
    const fl = r.remoteFail;
    assert(gen.requests.filter((x) => x[0] === 'fail').length === 2, 'a 500 is retried once (retries: 1), not more');
    assert(/remote generator failed/.test(fl.degraded || '') && /model overloaded/.test(fl.degraded) && /local model answered/.test(fl.degraded), `500 → local fallback, error body in degraded: ${JSON.stringify(fl)}`);
    assert(fl.generate.length === 2 && fl.generate[0][1] && fl.generate[1][0] === 'local' && fl.generate[1][1] === null, `500 → both generate steps in the trace: ${JSON.stringify(fl)}`);
    const st = r.remoteStall;
    assert(/remote generator failed/.test(st.degraded || '') && /1500/.test(st.degraded) && st.generate.at(-1)[0] === 'local', `stalled remote → timeout → local: ${JSON.stringify(st)}`);
    const dw = r.remoteDown;
    assert(dw.question === 'What color is a stop sign?' && dw.answer === '' && /no answer: the generator failed/.test(dw.degraded || '') && dw.generate.length === 1, `remote down, no fallback: ${JSON.stringify(dw)}`);
    assert(r.remoteBadUrl.name === 'InvalidArgumentError' && /not a URL/.test(r.remoteBadUrl.message), `bad generator URL → typed error: ${JSON.stringify(r.remoteBadUrl)}`);
    const ev = r.evaluate;
    assert(JSON.stringify(ev.ids) === '["cat","sign"]' && JSON.stringify(ev.streamed) === '["cat","sign"]', `evaluate: records in order, streamed: ${JSON.stringify(ev)}`);
    assert(ev.n === 2 && ev.k === 2 && ev.arms.every((a) => a[0] === 'string' && a[1] <= 2 && a[2] === 'string' && a[3]), `evaluate: both arms per item: ${JSON.stringify(ev)}`);
    assert(ev.legacyRecall !== null && ev.mcnemar >= 0 && ev.mcnemar <= 1, `evaluate: summary metrics: ${JSON.stringify(ev)}`);
    assert(ev.report[0] && ev.report[1] && !ev.report[2], `evaluate: HTML report: ${JSON.stringify(ev.report)}`);
    for (const [key, v] of [['worker', r.relativeSearch], ['page', r.pageRelativeSearch]]) {
      assert(!v.error && v.documents >= 1 && v.retrieve.length === 1 && v.retrieve[0] === null, `${key}: searchUrl '.' is this page's origin (its /v1/search answered): ${JSON.stringify(v)}`);
    }
    const er = r.evalRelative;
    assert(!er.error && er.image === './fixtures/chelsea.png' && JSON.stringify(er.streamed) === '["./fixtures/chelsea.png"]' && er.retrieved >= 1,
      `evaluate in the worker: records keep the image as given, relative searchUrl answered: ${JSON.stringify(er)}`);
    const ss = r.sharedSignal;
    assert(!ss.error && ss.listeners === 0 && ss.aborts === 0, `one signal over ${ss.calls} finished calls: no listener left, no abort sent when it aborts: ${JSON.stringify(ss)}`);
    assert(r.cached.length >= 5 && r.cached.every((c) => c[2]), `cached files with hashes: ${JSON.stringify(r.cached)}`);
    assert(r.missingFile.isNetworkError && r.missingFile.status === 404, `missing file → NetworkError 404: ${JSON.stringify(r.missingFile)}`);
    assert(r.corsBlocked.isNetworkError && /CORS/.test(r.corsBlocked.message), `a host without CORS → NetworkError naming CORS: ${JSON.stringify(r.corsBlocked)}`);
    assert(r.afterErrors === 'chat.completion', `the page still loads and generates after the errors: ${r.afterErrors}`);
  });
  await check('consumer page: no console errors', async () => {
    // expected: the 404 of the missing file and Chromium's report of the blocked cross-origin download
    const bad = errors.filter((e) => !/favicon|404|nocors\/config\.json/.test(e));
    assert(bad.length === 0, bad.join('\n'));
  });
} finally {
  await browser.close();
  server.stop();
  gen.close();
}
if (failed()) process.exit(1);
