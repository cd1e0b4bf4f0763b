// The demo page: opens wgpool on the browser's WebGPU adapter, pools a picture, runs the checked
// cases and publishes the verdict as `window.__wgpoolResult` for the test runner.
//
// URL parameters: seed (default 7), cases (f32 cases per API, default 120), f16 (f16 cases per API
// where the adapter has shader-f16, default 40), apis (default "encoder,host").

import init, { createDemo } from './pkg/wgpool_web.js';

const params = new URLSearchParams(location.search);
const seed = Number(params.get('seed') ?? 7) >>> 0;
const f32Cases = Number(params.get('cases') ?? 120);
const f16Cases = Number(params.get('f16') ?? 40);
const apis = (params.get('apis') ?? 'encoder,host').split(',').filter(Boolean);
const CASE_TIMEOUT_MS = 60_000;

const result = {
  done: false,
  verdict: 'running',
  passed: 0,
  failed: 0,
  errors: [],       // WebGPU uncaptured errors, shader compilation errors, device loss, exceptions
  warnings: [],     // shader compilation warnings and infos
  failures: [],     // failed cases
  adapter: null,
  seed,
  apis,
  image: null,
  bench: null,
  totalMs: 0,
};
window.__wgpoolResult = result;

const $ = (id) => document.getElementById(id);

function addError(message) {
  result.errors.push(message);
  const div = document.createElement('div');
  div.textContent = message;
  $('errors').appendChild(div);
  console.error('[wgpool]', message);
}

// ---- Watch every WebGPU device and shader module the wasm module creates. ----
// wgpu sets `onuncapturederror` itself; an event listener sees the same errors independently.
const shaderSources = new WeakMap();
if (navigator.gpu) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (descriptor) {
    const device = await requestDevice.call(this, descriptor);
    // wgpu reports the adapter's `description`, which Chromium leaves empty; keep the rest.
    const i = this.info ?? {};
    result.adapterInfo = { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description, isFallbackAdapter: i.isFallbackAdapter };
    result.requiredFeatures = [...(descriptor?.requiredFeatures ?? [])];
    result.adapterFeatures = [...this.features].sort();
    result.shaderModules = 0;
    device.addEventListener('uncapturederror', (event) => {
      addError(`WebGPU uncaptured ${event.error.constructor.name}: ${event.error.message}`);
    });
    device.lost.then((info) => {
      if (info.reason !== 'destroyed') addError(`WebGPU device lost (${info.reason}): ${info.message}`);
    });
    return device;
  };
  const createShaderModule = GPUDevice.prototype.createShaderModule;
  GPUDevice.prototype.createShaderModule = function (descriptor) {
    const module = createShaderModule.call(this, descriptor);
    result.shaderModules = (result.shaderModules ?? 0) + 1;
    result.shaderLabels = [...(result.shaderLabels ?? []), descriptor.label ?? '(unlabelled)'];
    const lines = String(descriptor.code).split('\n');
    module.getCompilationInfo().then((info) => {
      for (const m of info.messages) {
        const where = `${descriptor.label ?? 'shader'}:${m.lineNum}:${m.linePos}`;
        const text = `${m.type} in ${where}: ${m.message}\n    ${(lines[m.lineNum - 1] ?? '').trim()}`;
        if (m.type === 'error') addError(`WGSL compilation ${text}`);
        else result.warnings.push(text);
      }
    }, (e) => addError(`getCompilationInfo: ${e}`));
    return module;
  };
}

function showList(dl, entries) {
  dl.replaceChildren();
  for (const [k, v] of entries) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dl.append(dt, dd);
  }
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer after ${CASE_TIMEOUT_MS / 1000} s`)), CASE_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---- The picture: input, pooled output and argmax offsets. ----
const OFFSET_COLOURS = [
  [230, 25, 75], [245, 130, 48], [255, 225, 25],
  [60, 180, 75], [70, 240, 240], [0, 130, 200],
  [145, 30, 180], [240, 50, 230], [250, 250, 250],
];

function drawRgb(canvas, width, height, data) {
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) img.data[i * 4 + c] = Math.round(Math.min(1, Math.max(0, data[i * 3 + c])) * 255);
    img.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function drawPicture(p) {
  drawRgb($('input-canvas'), p.width, p.height, p.input);
  drawRgb($('pooled-canvas'), p.outWidth, p.outHeight, p.pooled);
  const canvas = $('argmax-canvas');
  canvas.width = p.outWidth;
  canvas.height = p.outHeight;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(p.outWidth, p.outHeight);
  for (let oy = 0; oy < p.outHeight; oy++) {
    for (let ox = 0; ox < p.outWidth; ox++) {
      const o = oy * p.outWidth + ox;
      const idx = p.indices[o * 3]; // red channel
      let colour = [0, 0, 0];
      if (idx !== 0xffffffff) {
        const dy = Math.floor(idx / p.width) - (oy * 2 - 1);
        const dx = (idx % p.width) - (ox * 2 - 1);
        colour = OFFSET_COLOURS[dy * 3 + dx] ?? [128, 128, 128];
      }
      img.data.set([...colour, 255], o * 4);
    }
  }
  ctx.putImageData(img, 0, 0);
  const legend = $('legend-canvas');
  legend.width = 3;
  legend.height = 3;
  const lctx = legend.getContext('2d');
  const limg = lctx.createImageData(3, 3);
  OFFSET_COLOURS.forEach((c, i) => limg.data.set([...c, 255], i * 4));
  lctx.putImageData(limg, 0, 0);
  $('picture-spec').textContent = p.spec;
  $('picture-note').textContent =
    `${p.width}×${p.height} RGB → ${p.outWidth}×${p.outHeight} in ${p.ms.toFixed(1)} ms (upload, kernel, readback); ` +
    (p.matches ? 'values and indices identical to the CPU reference.' : 'MISMATCH with the CPU reference.');
}

// ---- Cases. ----
function addRow(r) {
  const tr = document.createElement('tr');
  if (!r.passed) tr.className = 'fail';
  const cells = [
    [r.index], [r.dtype], [r.mode], [r.spec, 'spec'], [r.fill + (r.corruptIndex ? ' + bad index' : '')],
    [`${r.inputLen} → ${r.outputLen}`, 'num'], [r.forwardMs.toFixed(1), 'num'], [r.backwardMs.toFixed(1), 'num'],
    [r.passed ? 'bit-exact' : r.message, r.passed ? 'ok' : 'bad'],
  ];
  for (const [text, cls] of cells) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  const body = $('cases').tBodies[0];
  // Failures go to the top of the (scrolling) table.
  if (r.passed) body.appendChild(tr);
  else body.insertBefore(tr, body.firstChild);
}

function showSummary() {
  const entries = [
    ['cases', `${result.passed} passed, ${result.failed} failed`],
    ['APIs', apis.join(', ')],
    ['seed', String(seed)],
    ['WebGPU errors', String(result.errors.length)],
    ['WGSL modules', `${result.shaderModules ?? 0} compiled by the browser, ${result.warnings.length} warnings: ${countLabels(result.shaderLabels)}`],
  ];
  if (result.bench) {
    const b = result.bench;
    entries.push(['timing', `${b.spec}: forward ${b.forwardMs.toFixed(1)} ms, backward ${b.backwardMs.toFixed(1)} ms (median of ${b.runs}, with upload and readback)`]);
  }
  if (result.totalMs) entries.push(['total', `${(result.totalMs / 1000).toFixed(1)} s`]);
  showList($('summary'), entries);
}

function finish() {
  const ok = result.adapter && result.failed === 0 && result.errors.length === 0 && result.passed > 0;
  result.verdict = ok ? 'pass' : 'fail';
  const v = $('verdict');
  v.className = `verdict ${result.verdict}`;
  v.textContent = ok
    ? `PASS: ${result.passed} cases bit-exact`
    : `FAIL: ${result.failed} failed, ${result.errors.length} errors${result.adapter ? '' : ', no adapter'}`;
  showSummary();
  result.done = true;
  console.log('[wgpool] done');
}

async function main() {
  const t0 = performance.now();
  console.log('[wgpool] loading the module');
  await init();
  if (!navigator.gpu) {
    addError('no WebGPU: navigator.gpu is missing (Chromium needs --enable-unsafe-webgpu here)');
    return;
  }
  let demo;
  console.log('[wgpool] opening the adapter');
  try {
    demo = await createDemo();
  } catch (e) {
    addError(`no adapter / device: ${e.message ?? e}`);
    return;
  }
  const a = demo.adapter();
  const ji = result.adapterInfo ?? {};
  a.label = a.name || [ji.vendor, ji.architecture, ji.device].filter(Boolean).join(' ') || '(unnamed)';
  result.adapter = a;
  showList($('adapter'), [
    ['name', a.label],
    ['wgpu AdapterInfo.name', a.name || '(empty: the browser hides the description)'],
    ['GPUAdapterInfo', `vendor "${ji.vendor ?? ''}", architecture "${ji.architecture ?? ''}", device "${ji.device ?? ''}"${ji.isFallbackAdapter ? ', fallback adapter' : ''}`],
    ['backend', a.backend],
    ['type', a.deviceType],
    ['adapter features', (result.adapterFeatures ?? []).join(', ') || 'none'],
    ['device features', (result.requiredFeatures ?? []).join(', ') || 'none'],
    ['shader-f16', a.f16 ? 'yes' : 'no'],
    ['timestamp-query', a.timestamps ? 'yes' : 'no'],
    ['max storage binding', `${(a.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB`],
  ]);

  console.log('[wgpool] pooling the picture');
  try {
    const picture = await withTimeout(demo.demoImage(96, apis[0] ?? 'encoder'), 'picture');
    drawPicture(picture);
    result.image = { spec: picture.spec, ms: picture.ms, matches: picture.matches };
    if (picture.matches) result.passed++;
    else {
      result.failed++;
      result.failures.push({ index: 'picture', dtype: 'f32', mode: apis[0] ?? 'encoder', spec: picture.spec, fill: 'picture', message: 'values or indices differ from the CPU reference' });
    }
  } catch (e) {
    addError(`picture: ${e.message ?? e}`);
  }

  const plan = [];
  for (const api of apis) {
    for (let i = 0; i < f32Cases; i++) plan.push([i, 'f32', api]);
    if (a.f16) for (let i = 0; i < f16Cases; i++) plan.push([i, 'f16', api]);
  }
  for (const [index, dtype, api] of plan) {
    let r;
    // The test runner reads this line: if the page stops answering, it names the case.
    console.log(`[wgpool] case ${index} ${dtype} ${api} starting`);
    try {
      r = await withTimeout(demo.runCase(index, seed, dtype, api), `case ${index} ${dtype} ${api}`);
    } catch (e) {
      addError(`case ${index} ${dtype} ${api}: ${e.message ?? e}`);
      break; // a hung or broken device makes the rest meaningless
    }
    addRow(r);
    if (r.passed) result.passed++;
    else {
      result.failed++;
      result.failures.push(r);
    }
    showSummary();
  }

  console.log('[wgpool] timing');
  try {
    result.bench = await withTimeout(demo.bench(3, apis[0] ?? 'encoder'), 'timing');
    if (!result.bench.indicesMatch) addError(`timing run: indices differ from the CPU reference`);
  } catch (e) {
    addError(`timing: ${e.message ?? e}`);
  }
  result.totalMs = performance.now() - t0;
}

main()
  .catch((e) => addError(`page: ${e.stack ?? e}`))
  .finally(finish);

/** `a, b ×2, c` from a list of shader labels. */
function countLabels(labels = []) {
  const counts = new Map();
  for (const l of labels) counts.set(l, (counts.get(l) ?? 0) + 1);
  return [...counts].map(([l, n]) => (n > 1 ? `${l} ×${n}` : l)).join(', ');
}
