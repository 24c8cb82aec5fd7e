// shlib probe: time the first load of npm modules in a fresh Node.js process.
//
//   node load.js '{"lib": "/shlib/lib", "modules": ["lodash"], "barrier": true, "hold": true}'
//
// `lib` holds node_modules/. With `barrier`, the probe prints "ready" and waits for one
// line on stdin ("go <epoch ms>") before it loads anything, so that the containers of a batch
// start loading together. It prints one JSON line on stdout; a module that fails to load is
// reported with its error and the others are still loaded. With `hold`, it then waits for one
// more stdin line ("exit") or the end of stdin before exiting 0, so that the harness can read
// the container's cgroup while the sandbox still exists; without it, it exits at once.
//
// Wall-clock stamps (epoch ms, this process's clock): process_start_wall_ms (the process began),
// ready_wall_ms, go_recv_wall_ms (the go line arrived), go_wall_ms (loading began),
// loaded_wall_ms (loading ended). proc_cpu_ms: this process's user + system CPU between go and
// loaded (process.cpuUsage: every thread of the process, no child).
'use strict';
const fs = require('fs');
const path = require('path');
const { pathToFileURL } = require('url');
const { performance } = require('perf_hooks');

const bootMs = performance.now(); // ms since this process started: Node's own boot
const cfg = JSON.parse(process.argv[2]);
const libRequire = require('module').createRequire(path.join(cfg.lib, 'node_modules', '.shlib-probe.js'));

// Entry file of an ES-module-only package (exports' "import"/"default", then module/main).
function esmEntry(name) {
  const dir = path.join(cfg.lib, 'node_modules', name);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  let target = pkg.exports;
  if (target && typeof target === 'object' && '.' in target) target = target['.'];
  for (let depth = 0; target && typeof target === 'object' && depth < 8; depth++) {
    target = target.import ?? target.node ?? target.default ?? null;
  }
  return path.join(dir, typeof target === 'string' ? target : (pkg.module || pkg.main || 'index.js'));
}

function packageVersion(name) {
  try {
    const file = path.join(cfg.lib, 'node_modules', name, 'package.json');
    return JSON.parse(fs.readFileSync(file, 'utf8')).version ?? null;
  } catch {
    return null;
  }
}

async function loadOne(name) {
  const before = Object.keys(require.cache).length;
  let kind = 'cjs';
  let error = null;
  const t0 = process.hrtime.bigint();
  try {
    libRequire(name);
  } catch (err) {
    if (err.code === 'ERR_REQUIRE_ESM' || err.code === 'ERR_PACKAGE_PATH_NOT_EXPORTED') {
      kind = 'esm';
      try {
        await import(pathToFileURL(esmEntry(name)).href);
      } catch (err2) {
        error = `${err2.code ?? err2.name}: ${err2.message}`;
      }
    } else {
      error = `${err.code ?? err.name}: ${err.message}`;
    }
  }
  const t1 = process.hrtime.bigint();
  return {
    module: name,
    version: packageVersion(name),
    kind,
    ok: error === null,
    error: error === null ? null : error.slice(0, 2000),
    load_ms: Number(t1 - t0) / 1e6,
    files: kind === 'cjs' ? Object.keys(require.cache).length - before : null,
  };
}

// Resolves when the harness says go: "go" now, or "go <epoch ms>" at that wall-clock time
// (a shared start time keeps the delivery of the message out of the batch's start skew).
let goRecvWallMs = null;
function waitForGo() {
  return new Promise((resolve) => {
    process.stdin.once('data', (chunk) => {
      goRecvWallMs = performance.timeOrigin + performance.now();
      process.stdin.pause();
      const at = Number(String(chunk).trim().split(/\s+/)[1]);
      const wait = at - (performance.timeOrigin + performance.now());
      if (Number.isFinite(wait) && wait > 0) setTimeout(resolve, wait);
      else resolve();
    });
    process.stdout.write('ready\n');
  });
}

async function main() {
  const readyWallMs = performance.timeOrigin + performance.now();
  if (cfg.barrier) await waitForGo();
  const cpu0 = process.cpuUsage();
  const goWallMs = performance.timeOrigin + performance.now();
  const results = [];
  for (const name of cfg.modules) results.push(await loadOne(name));
  const loadedWallMs = performance.timeOrigin + performance.now();
  const cpu = process.cpuUsage(cpu0);
  const out = {
    probe: 'load',
    node: process.version,
    boot_ms: bootMs,
    process_start_wall_ms: performance.timeOrigin,
    ready_wall_ms: readyWallMs,
    go_recv_wall_ms: goRecvWallMs,
    go_wall_ms: goWallMs,
    loaded_wall_ms: loadedWallMs,
    proc_cpu_ms: (cpu.user + cpu.system) / 1000,
    rss_bytes: process.memoryUsage().rss,
    results,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
  if (cfg.hold) await waitForExit();
  process.exit(0);
}

// Resolves on the next stdin line (the harness's "exit") or at the end of stdin.
function waitForExit() {
  return new Promise((resolve) => {
    process.stdin.on('data', (chunk) => { if (String(chunk).includes('\n')) resolve(); });
    process.stdin.on('end', resolve);
    process.stdin.on('error', resolve);
    process.stdin.resume();
  });
}

main();
