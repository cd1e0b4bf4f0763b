// Serves web/ on 127.0.0.1, opens the demo page in Debian's headless Chromium (never a downloaded
// browser), waits for the page's verdict and exits non-zero on any mismatch, any WebGPU error, or
// no adapter. Saves a screenshot of the page.
//
//   node test/browser-test.mjs [--serve] [--port N] [--screenshot FILE] [--timeout SECONDS]
//                              [--stall SECONDS] [--query "cases=120&f16=40&seed=7&apis=encoder,host"]
//
// --serve only serves the page (open the printed address in a browser with WebGPU).

import { createServer } from 'node:http';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, extname, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const serveOnly = args.includes('--serve');
const port = Number(option('--port', serveOnly ? 8000 : 0));
const screenshot = resolve(option('--screenshot', join(root, 'screenshot.png')));
const timeoutS = Number(option('--timeout', 600));
const stallS = Number(option('--stall', 60));
const query = option('--query', '');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.json': 'application/json',
};

const server = createServer(async (req, res) => {
  const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  const file = resolve(join(root, path.endsWith('/') ? path + 'index.html' : path));
  const allowed = (file === root || file.startsWith(root + sep)) && !file.includes(`${sep}node_modules${sep}`) && !file.includes(`${sep}target${sep}`);
  try {
    if (!allowed) throw new Error('outside');
    const body = await readFile(file);
    res.writeHead(200, { 'content-type': MIME[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    res.end(body);
  } catch {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  }
});
await new Promise((ok) => server.listen(port, '127.0.0.1', ok));
const url = `http://127.0.0.1:${server.address().port}/index.html${query ? '?' + query : ''}`;

if (serveOnly) {
  console.log(`serving ${root} at ${url} (Ctrl-C stops)`);
  console.log('open it in a browser with WebGPU (Chrome/Edge 113+, or chromium --enable-unsafe-webgpu)');
} else {
  const code = await runTest();
  server.close();
  process.exit(code); // also ends a browser that would not close
}

async function runTest() {
  const { chromium } = await import('playwright-core');
  const profile = await mkdtemp(join(tmpdir(), 'wgpool-chromium-'));
  const consoleErrors = [];
  let lastProgress = '';
  let browser;
  try {
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: chromiumPath,
      headless: true,
      args: [
        '--enable-unsafe-webgpu',
        '--no-sandbox',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1280, height: 900 },
    });
    const page = browser.pages()[0] ?? (await browser.newPage());
    // The page logs '[wgpool] …' as it goes and '[wgpool] done' at the end. A page whose main
    // thread spins (a blocking wait inside the wasm module) answers nothing, not even
    // page.evaluate: so the wait below follows the console and gives up after a stall.
    let lastSignal = Date.now();
    let done = false;
    page.on('console', (m) => {
      const text = m.text();
      if (m.type() === 'error') consoleErrors.push(text);
      if (text.startsWith('[wgpool] ')) {
        lastSignal = Date.now();
        if (text === '[wgpool] done') done = true;
        else if (m.type() !== 'error') lastProgress = text.slice(9);
      }
      if (process.env.WGPOOL_WEB_VERBOSE) console.log(`[page ${m.type()}] ${text}`);
    });
    page.on('pageerror', (e) => consoleErrors.push(`page error: ${e.message}`));
    console.log(`browser: ${browser.browser()?.version() ?? 'chromium'} at ${chromiumPath}, page ${url}`);
    const t0 = Date.now();
    await bounded(page.goto(url), 60, 'loading the page');
    while (!done) {
      await new Promise((ok) => setTimeout(ok, 250));
      if (Date.now() - lastSignal > stallS * 1000) {
        // Its main thread is stuck: it would answer neither page.evaluate nor a screenshot.
        console.error(`FAIL: the page stopped answering for ${stallS} s during: ${lastProgress || 'start-up'}` +
          ' (a page whose only thread spins, e.g. in a blocking wait on a browser promise inside the wasm module, looks like this)');
        return 1;
      }
      if (Date.now() - t0 > timeoutS * 1000) {
        console.error(`FAIL: the page gave no verdict within ${timeoutS} s; last step: ${lastProgress || 'start-up'}`);
        break;
      }
    }
    const result = await bounded(page.evaluate(() => window.__wgpoolResult ?? null), 20, 'reading the result');
    if (await bounded(page.screenshot({ path: screenshot, fullPage: true }), 30, 'the screenshot')) {
      console.log(`screenshot: ${screenshot}`);
    }
    if (!result) {
      console.error(`FAIL: the page published no result; last step: ${lastProgress || 'start-up'}`);
      return 1;
    }
    return report(result, consoleErrors, (Date.now() - t0) / 1000);
  } finally {
    await bounded(browser?.close(), 10, 'closing the browser');
    await rm(profile, { recursive: true, force: true });
  }
}

/** `promise`'s value, or null (with a message) once `seconds` have passed or if it fails. */
async function bounded(promise, seconds, what) {
  let timer;
  const timeout = new Promise((ok) => {
    timer = setTimeout(() => {
      console.error(`${what}: no answer after ${seconds} s`);
      ok(null);
    }, seconds * 1000);
  });
  try {
    return await Promise.race([Promise.resolve(promise).catch((e) => (console.error(`${what}: ${e.message}`), null)), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function report(result, consoleErrors, seconds) {
  const a = result.adapter;
  console.log(a ? `adapter: ${a.label} (${a.backend}, ${a.deviceType}; shader-f16 ${a.f16 ? 'yes' : 'no'})` : 'adapter: none');
  if (result.image) console.log(`picture: ${result.image.spec}, ${result.image.ms.toFixed(1)} ms, ${result.image.matches ? 'bit-exact' : 'MISMATCH'}`);
  if (result.bench) {
    const b = result.bench;
    console.log(`timing: ${b.spec}: forward ${b.forwardMs.toFixed(1)} ms, backward ${b.backwardMs.toFixed(1)} ms (median of ${b.runs})`);
  }
  console.log(`WGSL modules compiled by the browser: ${countLabels(result.shaderLabels) || 'none'}`);
  for (const w of result.warnings) console.log(`shader ${w}`);
  for (const f of result.failures) console.error(`FAILED ${f.dtype ?? ''} ${f.mode ?? ''} #${f.index ?? ''} ${f.spec} (${f.fill ?? ''}): ${f.message}`);
  for (const e of result.errors) console.error(`ERROR ${e}`);
  // The page logs its own errors to the console too; anything else there counts as well.
  const extra = consoleErrors.filter((m) => !m.startsWith('[wgpool]'));
  for (const e of extra) console.error(`CONSOLE ERROR ${e}`);
  const ok = result.done && result.verdict === 'pass' && a && result.failed === 0 && result.errors.length === 0 && extra.length === 0;
  console.log(`page verdict: ${result.verdict}; seed ${result.seed}; ${seconds.toFixed(1)} s in the browser`);
  console.log(`browser: ${result.passed} passed, ${result.failed} failed`);
  if (!ok) console.error('FAIL: see above');
  return ok ? 0 : 1;
}

/** `a, b ×2, c` from a list of shader labels. */
function countLabels(labels = []) {
  const counts = new Map();
  for (const l of labels) counts.set(l, (counts.get(l) ?? 0) + 1);
  return [...counts].map(([l, n]) => (n > 1 ? `${l} ×${n}` : l)).join(', ');
}
