// End-to-end: the real webvlm-server serves www/ + pkg/ + models/; headless Chromium (SwiftShader WebGPU) loads the
// offline default model (SmolLM2-135M GGUF) in the demo's Web Worker, takes an image and a question, and runs the
// pipeline (caption → query → /v1/search → answer with citations). Screenshot: target/e2e/demo.png.
import { mkdirSync, existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, startServer, startTestGenerator, launchBrowser, watchPage, check, failed, assert } from './lib.mjs';

const MODEL = path.join(ROOT, 'models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf');
const IMAGE = path.join(ROOT, 'tests/fixtures/images/chelsea.png');
const OUT = path.join(ROOT, 'target/e2e');
const LOAD_MS = 8 * 60000;
const RUN_MS = 8 * 60000;
mkdirSync(OUT, { recursive: true });

if (!existsSync(MODEL)) {
  console.log(`SKIP demo test: ${MODEL} is missing (scripts/fetch_real_models.sh fetches it)`);
  process.exit(0);
}

const gen = await startTestGenerator({ answer: 'Domestic cats are carnivores and eat meat [1].' });
const server = await startServer({ connectSrc: [gen.url] });
const browser = await launchBrowser();
const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
const page = await context.newPage();
const errors = watchPage(page);
const weightRequests = [];
page.on('request', (r) => {
  if (r.url().includes('/models/')) weightRequests.push(r.url());
});

try {
  await check('page loads under the server CSP, WebGPU adapter found', async () => {
    const res = await page.goto(`${server.url}/?model=smollm2`);
    assert(res.ok(), `GET / → ${res.status()}`);
    assert(/wasm-unsafe-eval/.test(res.headers()['content-security-policy'] || ''), 'CSP header present');
    await page.waitForFunction(() => document.getElementById('adapter').dataset.state !== 'unknown', null, { timeout: 30000 });
    const badge = await page.textContent('#adapter');
    console.log(`     adapter: ${badge}`);
    assert(await page.getAttribute('#adapter', 'data-state') === 'ok', `adapter badge: ${badge}`);
  });

  await check('non-image file → clear ImageError, page stays usable', async () => {
    await page.setInputFiles('#file', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('hello') });
    await page.waitForSelector('#ask-error:not([hidden])');
    const t = await page.textContent('#ask-error');
    assert(/ImageError/.test(t) && /not an image/.test(t), `error text: ${t}`);
  });

  await check('Remove resets the file input; Enter during IME composition does not ask; a failed cache clear is shown', async () => {
    await page.setInputFiles('#file', IMAGE);
    await page.waitForFunction(() => /×/.test(document.getElementById('image-info').textContent));
    await page.click('#clear-image');
    // an unchanged value fires no `change`: picking the same file again would do nothing
    assert(await page.$eval('#file', (f) => f.value) === '' && await page.isHidden('#preview'), 'Remove empties the file input');
    const submits = await page.evaluate(() => {
      let n = 0;
      document.getElementById('ask-form').addEventListener('submit', () => n++);
      const q = document.getElementById('question');
      q.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', isComposing: true, bubbles: true, cancelable: true }));
      const composing = n;
      q.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true, cancelable: true }));
      return [composing, n];
    });
    assert(submits[0] === 0 && submits[1] === 1, `submits after Enter while composing, then Enter: ${submits}`);
    await page.evaluate(() => {
      window.__cacheDelete = CacheStorage.prototype.delete;
      CacheStorage.prototype.delete = () => Promise.reject(new DOMException('storage is off (simulated)', 'SecurityError'));
    });
    await page.click('#model-card details.cache summary');
    await page.click('#cache-clear');
    await page.waitForFunction(() => document.getElementById('model-status').dataset.state === 'error');
    const status = await page.textContent('#model-status');
    await page.evaluate(() => (CacheStorage.prototype.delete = window.__cacheDelete));
    assert(/clear the cache.*SecurityError: storage is off/.test(status), `status: ${status}`);
  });

  await check('load the offline default model (download, upload, compile progress)', async () => {
    await page.click('#load');
    await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.model), null, { timeout: LOAD_MS });
    const status = await page.textContent('#model-status');
    console.log(`     ${status}`);
    assert(await page.evaluate(() => document.body.dataset.model) === 'ready', `model status: ${status}`);
    for (const p of ['download', 'upload', 'compile']) {
      const [v, max] = await page.$eval(`#p-${p}`, (e) => [e.value, e.max]);
      assert(v >= max && max > 0, `${p} progress complete (${v}/${max})`);
    }
    assert(weightRequests.some((u) => u.endsWith('.gguf')), 'the GGUF was downloaded');
    const r = await page.evaluate(() => window.__webvlmLoadReport);
    console.log(`     load report: ${JSON.stringify(r)}`);
    writeFileSync(path.join(OUT, 'load_report.json'), JSON.stringify(r, null, 1));
  });

  await check('ask about an image: streamed answer and pipeline steps', async () => {
    await page.setInputFiles('#file', IMAGE);
    await page.waitForFunction(() => /×/.test(document.getElementById('image-info').textContent));
    assert(await page.isHidden('#ask-error'), 'the earlier error is cleared');
    await page.fill('#question', 'What do domestic cats eat?');
    await page.click('#ask');
    // the answer streams: the caret shows while text grows
    await page.waitForFunction(() => document.querySelector('.step[data-step="answer"]').dataset.state === 'running', null, { timeout: RUN_MS });
    await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.run), null, { timeout: RUN_MS });
    const run = await page.evaluate(() => document.body.dataset.run);
    const err = await page.isVisible('#ask-error') ? await page.textContent('#ask-error') : '';
    assert(run === 'done', `pipeline finished: ${run} ${err}`);
    const st = await page.$$eval('.step', (ls) => Object.fromEntries(ls.map((l) => [l.dataset.step, [l.dataset.state, l.querySelector('.step-body').textContent]])));
    console.log(`     steps: ${JSON.stringify(st)}`);
    assert(st.caption[0] === 'skipped', `caption skipped for a text-only model: ${st.caption}`);
    assert(['done', 'degraded'].includes(st.rephrase[0]) && st.rephrase[1].trim().length > 0, 'a search query was written (or the question used, flagged)');
    assert(st.retrieve[0] === 'done', 'documents retrieved');
    const links = await page.$$eval('.docs a', (as) => as.map((a) => a.href));
    assert(links.length > 0 && links.every((h) => /^https?:\/\//.test(h)), `document links: ${links}`);
    assert(links.some((h) => /cat/i.test(h)), `the cat article is among the results: ${links}`);
    assert(['done', 'degraded'].includes(st.answer[0]), `answer step finished: ${st.answer}`);
    const answer = (await page.textContent('#answer')).trim();
    console.log(`     answer: ${answer}`);
    assert(answer.length > 10, 'a non-trivial answer');
    const chips = await page.$$eval('#stats .chip', (c) => c.map((x) => x.textContent));
    console.log(`     stats: ${chips.join(' | ')}`);
    assert(chips.some((c) => /tok\/s/.test(c)), 'tokens/s shown');
    await page.screenshot({ path: path.join(OUT, 'demo.png'), fullPage: true });
  });

  await check('reload: weights come from the cache, no network request for them', async () => {
    const cached = await page.evaluate(async () => (await import('/pkg/index.js')).listCachedModels());
    assert(cached.some((c) => c.url.endsWith('.gguf') && c.sha256), `cache lists the GGUF with its hash: ${JSON.stringify(cached)}`);
    weightRequests.length = 0;
    await page.reload();
    await page.click('#load');
    await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.model), null, { timeout: LOAD_MS });
    assert(await page.evaluate(() => document.body.dataset.model) === 'ready', await page.textContent('#model-status'));
    assert(weightRequests.length === 0, `weight requests after reload: ${weightRequests}`);
    assert(/cache/.test(await page.textContent('#pv-download')), 'download bar says cache');
  });

  await check('answer generator field: a remote OpenAI-compatible endpoint answers, this model writes the query', async () => {
    await page.click('#gen-options summary');
    await page.fill('#gen-url', gen.url);
    await page.fill('#question', 'What do domestic cats eat?');
    await page.click('#ask');
    await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.run), null, { timeout: RUN_MS });
    assert(await page.evaluate(() => document.body.dataset.run) === 'done', 'pipeline finished');
    const answer = (await page.textContent('#answer')).trim();
    assert(answer.startsWith('Domestic cats are carnivores and eat meat'), `the remote's answer is shown: ${answer}`);
    assert(gen.requests.length === 1 && gen.requests[0][2].stream === true, `one streamed request to the endpoint: ${gen.requests.length}`);
    const prompt = JSON.stringify(gen.requests[0][2].messages);
    assert(prompt.includes('What do domestic cats eat?'), 'the endpoint got the question with the retrieved context');
  });

  await check('a lost GPU device: DeviceLostError shown, its worker stopped, Load works again', async () => {
    // test-only: the worker's GPUDevice is destroyed at its next command encoder (through Playwright, in the
    // worker's realm; the page cannot reach it), so the ask's first GPU work meets a lost device
    const worker = page.workers().find((w) => w.url().endsWith('/pkg/worker.js'));
    assert(worker, `the engine's worker among ${page.workers().map((w) => w.url())}`);
    await worker.evaluate(() => {
      const proto = GPUDevice.prototype;
      const create = proto.createCommandEncoder;
      proto.createCommandEncoder = function (...args) {
        proto.createCommandEncoder = create;
        this.destroy();
        return create.apply(this, args);
      };
    });
    const stopped = new Promise((r) => worker.once('close', r));
    // this model answers (the remote of the check before would answer without the GPU)
    await page.$eval('#gen-url', (i) => (i.value = ''));
    await page.fill('#question', 'What do domestic cats eat?');
    await page.click('#ask');
    await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.run), null, { timeout: RUN_MS });
    const run = await page.evaluate(() => document.body.dataset.run);
    const err = await page.isVisible('#ask-error') ? await page.textContent('#ask-error') : '(no error shown)';
    const answer = await page.textContent('.step[data-step="answer"] .step-body');
    assert(run === 'error' && /^DeviceLostError: .*device was lost/.test(err), `the ask fails with DeviceLostError: run ${run}, error ${err}, answer step ${answer}`);
    const status = await page.textContent('#model-status');
    assert(/DeviceLostError.*Press Load to start again/.test(status) && await page.getAttribute('#model-status', 'data-state') === 'error', `status: ${status}`);
    assert(!(await page.isDisabled('#load')) && await page.isDisabled('#ask'), 'Load enabled, Ask disabled (no model)');
    await Promise.race([stopped, new Promise((_, no) => setTimeout(() => no(new Error('the lost engine\'s worker is still running')), 10000))]);
    await page.click('#load');
    await page.waitForFunction(() => !document.getElementById('load').disabled && ['ready', 'error'].includes(document.body.dataset.model), null, { timeout: LOAD_MS });
    assert(await page.evaluate(() => document.body.dataset.model) === 'ready' && !(await page.isDisabled('#ask')), `loaded again: ${await page.textContent('#model-status')}`);
  });

  await check('no console errors or CSP violations', async () => {
    const bad = errors.filter((e) => !/favicon/.test(e));
    assert(bad.length === 0, bad.join('\n'));
  });
} finally {
  await browser.close();
  server.stop();
  gen.close();
}
if (failed()) {
  console.log(`${failed()} e2e check(s) failed`);
  process.exit(1);
}
