// Shared helpers of the e2e tests: start the real webvlm-server, launch Debian's Chromium with WebGPU.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Starts target/debug/webvlm-server on a free port; resolves to {url, stop}. */
export function startServer({ www = path.join(ROOT, 'www') } = {}) {
  const bin = process.env.WEBVLM_SERVER || path.join(ROOT, 'target/debug/webvlm-server');
  const args = ['--corpus', path.join(ROOT, 'data/corpus.jsonl'), '--port', '0', '--www', www,
    '--pkg', path.join(ROOT, 'pkg'), '--models', path.join(ROOT, 'models')];
  const proc = spawn(bin, args, { stdio: ['ignore', 'inherit', 'pipe'] });
  return new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error(`webvlm-server did not start: ${err}`)), 60000);
    proc.stderr.on('data', (d) => {
      err += d;
      process.stderr.write(d);
      const m = /listening on (http:\/\/[\d.:]+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1], stop: () => proc.kill('SIGTERM') });
      }
    });
    proc.on('exit', (code) => reject(new Error(`webvlm-server exited with ${code}: ${err}`)));
  });
}

/** Chromium with the flags of webdriver.json (headless, SwiftShader WebGPU). */
export async function launchBrowser() {
  const wd = JSON.parse(readFileSync(path.join(ROOT, 'webdriver.json'), 'utf8'));
  const args = wd['goog:chromeOptions'].args.filter((a) => !a.startsWith('--headless'));
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args });
}

/** Collects console errors, page errors and CSP violations of a page. */
export function watchPage(page, log = []) {
  page.on('console', (m) => {
    const t = `[console.${m.type()}] ${m.text()}`;
    if (process.env.E2E_VERBOSE || m.type() === 'error') console.log(t);
    if (m.type() === 'error') log.push(t);
  });
  page.on('pageerror', (e) => {
    console.log(`[pageerror] ${e.message}`);
    log.push(`pageerror: ${e.message}`);
  });
  return log;
}

let failures = 0;
export async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s): ${e.stack || e}`);
  }
}
export const failed = () => failures;

export function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}
