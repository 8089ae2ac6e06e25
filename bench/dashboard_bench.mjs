// The dashboard's figures (issue 11), in headless Chromium (Debian's /usr/bin/chromium)
// driven by playwright-core against a real `drover serve` that bench/run_dashboard.sh
// started and filled.
//
//   node bench/dashboard_bench.mjs paint ROUNDS
//       Opens each page ROUNDS times in a fresh tab (signed in, caches warm as for a user
//       coming back) and prints, per page, the median and worst first contentful paint and
//       the time until the page shows its data (the overview's counters, the tasks table's
//       first row), both from navigation start.
//   node bench/dashboard_bench.mjs stream SECONDS
//       Opens the overview, waits until it is live, then runs LOAD_CMD (a shell command that
//       submits tasks, with agents completing them) and measures the page's main thread for
//       SECONDS: busy fraction (CDP Performance.getMetrics TaskDuration over wall time), long
//       tasks (> 50 ms), the API fetches the stream's notices caused, and whether the
//       succeeded counter kept moving.
//
// Environment: DROVER_URL, DROVER_TOKEN (admin), NODE_MODULES (web/node_modules), LOAD_CMD.
import { createRequire } from "node:module";
import path from "node:path";
import { spawn } from "node:child_process";

const require = createRequire(path.join(process.env.NODE_MODULES ?? "node_modules", "x.js"));
const { chromium } = require("playwright-core");

const BASE = process.env.DROVER_URL;
const TOKEN = process.env.DROVER_TOKEN;
const [mode, arg] = process.argv.slice(2);
if (!BASE || !TOKEN || !["paint", "stream"].includes(mode)) {
  console.error("usage: DROVER_URL=... DROVER_TOKEN=... node dashboard_bench.mjs paint ROUNDS | stream SECONDS");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
// Sign in through the API's session route: the cookie lands in the browser context.
{
  const res = await context.request.post(BASE + "/v1/session", { data: { token: TOKEN } });
  if (!res.ok()) throw new Error(`sign-in: ${res.status()} ${await res.text()}`);
}
// Long tasks, from the first script on.
await context.addInitScript(() => {
  window.__longTasks = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longTasks.push(e.duration);
  }).observe({ type: "longtask", buffered: true });
});

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};
const ms = (x) => `${Math.round(x)} ms`;

async function measurePaint(url, ready) {
  const page = await context.newPage();
  await page.goto(BASE + url, { waitUntil: "commit" });
  await page.locator(ready).first().waitFor({ timeout: 30000 });
  // performance.now() is measured from navigation start.
  const shown = await page.evaluate(() => performance.now());
  const fcp = await page.evaluate(async () => {
    for (let i = 0; i < 100; i++) {
      const e = performance.getEntriesByName("first-contentful-paint")[0];
      if (e) return e.startTime;
      await new Promise((r) => setTimeout(r, 20));
    }
    return NaN;
  });
  await page.close();
  return { fcp, shown };
}

if (mode === "paint") {
  const rounds = Number(arg ?? 5);
  const pages = [
    ["/", '[data-testid="count-succeeded"]', "overview"],
    ["/tasks", 'tr[data-testid^="task-row-"]', "tasks (newest first)"],
    ["/tasks?state=ready", 'tr[data-testid^="task-row-"]', "tasks, ready, newest first"],
  ];
  // One warm-up visit: the assets are then in the browser's cache, as for a returning user.
  await measurePaint("/", pages[0][1]);
  for (const [url, ready, name] of pages) {
    const runs = [];
    for (let i = 0; i < rounds; i++) runs.push(await measurePaint(url, ready));
    const fcp = runs.map((r) => r.fcp);
    const shown = runs.map((r) => r.shown);
    console.log(`paint ${name}: first contentful paint median ${ms(median(fcp))} (worst ${ms(Math.max(...fcp))}), ` +
      `data shown median ${ms(median(shown))} (worst ${ms(Math.max(...shown))}) over ${rounds} visits`);
  }
} else {
  const seconds = Number(arg ?? 20);
  const page = await context.newPage();
  const fetches = [];
  page.on("request", (r) => {
    if (r.url().includes("/v1/") && !r.url().includes("/v1/stream")) fetches.push(r.url());
  });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(BASE + "/");
  await page.locator('[data-testid="count-succeeded"]').waitFor({ timeout: 30000 });
  for (let i = 0; i < 200; i++) {
    if ((await page.locator('[data-testid="live-status"]').textContent()) === "live") break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable", { timeDomain: "threadTicks" });
  const metric = async () => {
    const { metrics } = await cdp.send("Performance.getMetrics");
    return Object.fromEntries(metrics.map((m) => [m.name, m.value]));
  };
  const counter = async () =>
    Number(((await page.locator('[data-testid="count-succeeded"]').textContent()) ?? "0").replace(/,/g, ""));
  const load = spawn("bash", ["-c", process.env.LOAD_CMD ?? "sleep 1"], { stdio: ["ignore", "inherit", "inherit"] });
  const loadDone = new Promise((r) => load.on("exit", r));
  // Let the load reach its rate before the window opens.
  await new Promise((r) => setTimeout(r, 2000));
  const before = await metric();
  const longBefore = (await page.evaluate(() => window.__longTasks.length));
  const fetchesBefore = fetches.length;
  const t0 = Date.now();
  const seen = [await counter()];
  while (Date.now() - t0 < seconds * 1000) {
    await new Promise((r) => setTimeout(r, 1000));
    seen.push(await counter());
  }
  const after = await metric();
  const wall = (Date.now() - t0) / 1000;
  const longTasks = (await page.evaluate(() => window.__longTasks)).slice(longBefore);
  const busy = (after.TaskDuration - before.TaskDuration) / wall;
  const script = (after.ScriptDuration - before.ScriptDuration) / wall;
  const layout = (after.LayoutDuration - before.LayoutDuration + after.RecalcStyleDuration - before.RecalcStyleDuration) / wall;
  let moves = 0;
  for (let i = 1; i < seen.length; i++) if (seen[i] > seen[i - 1]) moves++;
  const rise = seen[seen.length - 1] - seen[0];
  console.log(`stream: over ${wall.toFixed(1)} s the main thread was busy ${(100 * busy).toFixed(1)}% ` +
    `(script ${(100 * script).toFixed(1)}%, style+layout ${(100 * layout).toFixed(1)}%), ` +
    `${longTasks.length} long task(s)${longTasks.length ? ` (longest ${ms(Math.max(...longTasks))})` : ""}, ` +
    `${fetches.length - fetchesBefore} API fetch(es) (${((fetches.length - fetchesBefore) / wall).toFixed(1)}/s)`);
  console.log(`stream: the succeeded counter rose by ${rise} (${Math.round(rise / wall)}/s shown), ` +
    `moved in ${moves} of ${seen.length - 1} one-second samples; script errors: ${errors.length}`);
  load.kill("SIGTERM");
  await loadDone;
}
await browser.close();
