// The dashboard in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core, against a real `drover serve` with real agents, started by
// tests/integration/dashboard.sh. Prints `ok - ...` / `not ok - ...` per check and ends with
// `N passed, N failed`; exits 1 on any failure.
//
// Environment:
//   DROVER_URL     the server's HTTP address (http://127.0.0.1:PORT)
//   DROVER_TOKEN   an admin token (to sign in through the page, and to seed work over the API)
//   ARTIFACTS      where the screenshots go (<page>.png)
//   NODE_MODULES   the node_modules directory holding playwright-core (web/node_modules)
// The server runs a pool for type "echo" (it answers its payload) and an agent for type
// "alpha" (tests/integration/agents/transform.sh: payload "poison" fails for good); no
// agent serves type "never".
import { createRequire } from "node:module";
import path from "node:path";
import fs from "node:fs";

const require = createRequire(path.join(process.env.NODE_MODULES ?? "node_modules", "x.js"));
const { chromium } = require("playwright-core");

const BASE = process.env.DROVER_URL;
const TOKEN = process.env.DROVER_TOKEN;
const ARTIFACTS = process.env.ARTIFACTS ?? "/tmp/dashboard-artifacts";
if (!BASE || !TOKEN) {
  console.error("set DROVER_URL and DROVER_TOKEN");
  process.exit(2);
}
fs.mkdirSync(ARTIFACTS, { recursive: true });

let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${name}: ${String(e && e.message ? e.message : e).split("\n")[0]}`);
  }
}
function assert(cond, why) {
  if (!cond) throw new Error(why);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, fn, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(150);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

// The API, with the token (seeding and checking what the UI did).
async function apiCall(method, p, body) {
  const res = await fetch(BASE + p, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json();
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(data)}`);
  return data;
}
const b64 = (s) => Buffer.from(s).toString("base64");
const submit = async (type, payload, extra = {}) =>
  (await apiCall("POST", "/v1/tasks", { task: { type, payload: b64(payload), ...extra } })).task.id;
const stateOf = async (id) => (await apiCall("GET", `/v1/tasks/${id}`)).state;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(10000);
// Script errors fail the run. The browser also logs every 4xx answer ("Failed to load
// resource"): the sign-in redirect and the bad-filter check cause some on purpose.
const scriptErrors = [];
page.on("pageerror", (e) => scriptErrors.push(`pageerror: ${e.message}`));
page.on("console", (m) => {
  if (m.type() !== "error") return;
  if (/Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) return;
  scriptErrors.push(`console: ${m.text()}`);
});
const shot = (name) => page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
async function noScriptErrors(where) {
  assert(scriptErrors.length === 0, `${where}: ${scriptErrors.join(" | ")}`);
}
const text = (sel) => page.locator(sel).first().textContent();

try {
  await check("an unsigned browser is sent to sign in", async () => {
    await page.goto(BASE + "/tasks?state=ready");
    await page.waitForURL(/\/signin\?next=/);
    await shot("signin");
  });
  await check("a bad token is refused with the server's message", async () => {
    await page.fill('[data-testid="signin-token"]', "drv_wrong_token");
    await page.click('[data-testid="signin-submit"]');
    await page.locator('[data-testid="inline-error"]').waitFor();
    assert(/UNAUTHENTICATED/.test(await text('[data-testid="inline-error"]')), "no UNAUTHENTICATED");
  });
  await check("signing in returns to the page asked for", async () => {
    await page.fill('[data-testid="signin-token"]', TOKEN);
    await page.click('[data-testid="signin-submit"]');
    await page.waitForURL(/\/tasks\?state=ready$/);
    await until("the principal in the header", async () => (await text('[data-testid="who"]')).length > 0);
  });

  // Overview: counters move while tasks flow, pushed live.
  await check("the overview's counters rise while tasks flow, pushed live", async () => {
    await page.goto(BASE + "/");
    await until("live", async () => (await text('[data-testid="live-status"]')) === "live");
    const before = Number((await text('[data-testid="count-succeeded"]')).replace(/,/g, ""));
    let stop = false;
    const flow = (async () => {
      while (!stop) {
        await apiCall("POST", "/v1/tasks:batch", { tasks: Array.from({ length: 10 }, (_, i) => ({ type: "echo", payload: b64(`{"n":${i}}`) })) });
        await sleep(200);
      }
    })();
    const t0 = Date.now();
    try {
      await until("count-succeeded to rise", async () =>
        Number((await text('[data-testid="count-succeeded"]')).replace(/,/g, "")) > before);
    } finally {
      stop = true;
      await flow;
    }
    console.log(`# the succeeded count rose after ${Date.now() - t0} ms`);
    await page.locator('[data-testid^="chart-"] canvas').first().waitFor();
    await shot("overview");
    await noScriptErrors("overview");
  });
  await check("pause stops live updates and resume restarts them", async () => {
    await page.click('[data-testid="pause-button"]');
    assert((await text('[data-testid="live-status"]')) === "paused", "not paused");
    await page.click('[data-testid="pause-button"]');
    await until("live again", async () => (await text('[data-testid="live-status"]')) === "live");
  });

  await check("the tasks filter by state, in the URL", async () => {
    await page.goto(BASE + "/tasks");
    await page.selectOption('[data-testid="filter-state"]', "succeeded");
    await page.click('[data-testid="filter-apply"]');
    await page.waitForURL(/state=succeeded/);
    // The rows of the unfiltered list may still be on screen for a moment after the URL
    // changed (the page re-renders when its module is ready): wait for the filtered ones.
    let states = [];
    await until("only succeeded rows", async () => {
      states = await page.locator('[data-testid^="task-row-"]').evaluateAll((rows) => rows.map((r) => r.dataset.state));
      return states.length > 0 && states.every((s) => s === "succeeded");
    }).catch(() => { throw new Error(`states: ${states}`); });
    await shot("tasks");
    await noScriptErrors("tasks");
  });
  await check("a bad filter shows the server's error", async () => {
    await page.goto(BASE + "/tasks?label=%3Dred");
    await page.locator('[data-testid="inline-error"]').waitFor();
    assert(/label: must be key=value/.test(await text('[data-testid="inline-error"]')), "no label message");
  });

  const never = await submit("never", '{"doc": 1, "title": "hello"}', { labels: { team: "red" } });
  await check("a task's page shows its payload as JSON", async () => {
    await page.goto(BASE + `/tasks/${never}`);
    await page.locator('[data-testid="task-payload"]').waitFor();
    assert((await text('[data-testid="task-payload"]')).includes('"doc": 1'), "payload not pretty-printed");
    await shot("task");
    await noScriptErrors("task");
  });
  await check("a cancel from the UI takes effect", async () => {
    await page.click('[data-testid="cancel-button"]');
    await page.click('[data-testid="confirm-ok"]');
    await until("CANCELED", async () => (await stateOf(never)) === "TASK_STATE_CANCELED");
    await until("the page to say so", async () => (await text('[data-testid="task-state"]')) === "canceled");
  });

  const dead = await submit("alpha", "poison", { max_attempts: 1 });
  await until("the dead letter", async () => (await stateOf(dead)) === "TASK_STATE_DEAD", 20000);
  await check("a reprocess from the dead-letter page takes effect", async () => {
    await page.goto(BASE + "/dlq");
    await page.locator('[data-testid="dlq-group"]').first().waitFor();
    await page.locator('[data-testid="dlq-group"] summary').first().click();
    await page.check(`[data-testid="dlq-select-${dead}"]`);
    await shot("dlq");
    await page.click('[data-testid="reprocess-selected"]');
    await page.click('[data-testid="confirm-ok"]');
    // It fails again (poison), so look for the reprocessing itself in its events.
    await until("the task to leave the dead-letter queue", async () => {
      const ev = await apiCall("GET", `/v1/events?task_id=${dead}`);
      return (ev.events ?? []).some((e) => e.attrs && e.attrs.from === "dead");
    });
    await noScriptErrors("dlq");
  });

  const wf = await apiCall("POST", "/v1/workflows", {
    workflow: {
      name: "browser-dag",
      steps: [
        { name: "fetch", task: { type: "echo", payload: b64("1") } },
        { name: "summarize", task: { type: "echo", payload: b64("2") }, depends_on: ["fetch"] },
        { name: "review", task: { type: "never", payload: b64("3") }, depends_on: ["fetch"] },
        { name: "publish", task: { type: "echo", payload: b64("4") }, depends_on: ["summarize", "review"] },
      ],
    },
  });
  await check("the workflow page draws a node per step, with the edges", async () => {
    await page.goto(BASE + `/workflows/${wf.id}`);
    await page.locator('[data-testid="dag"]').waitFor();
    for (const step of ["fetch", "summarize", "review", "publish"]) {
      await page.locator(`[data-testid="dag-node-${step}"]`).waitFor();
    }
    assert((await page.locator("svg.dag path.dag-edge").count()) === 4, "not 4 edges");
    await until("fetch to succeed on the page", async () =>
      (await page.locator('[data-testid="dag-node-fetch"]').getAttribute("data-state")) === "succeeded");
    await shot("workflow");
    await noScriptErrors("workflow");
  });
  await check("the workflows list shows it", async () => {
    await page.goto(BASE + "/workflows");
    await page.locator(`[data-testid="workflow-row-${wf.id}"]`).waitFor();
    await shot("workflows");
  });
  await check("the pools page lists the pool, and its page its members", async () => {
    await page.goto(BASE + "/pools");
    await page.locator('[data-testid="pool-row-echo-pool"]').waitFor();
    await shot("pools");
    await page.click('[data-testid="pool-row-echo-pool"] a');
    await page.waitForURL(/\/pools\/echo-pool$/);
    await page.locator('[data-testid="pool-summary"]').waitFor();
    await page.locator('[data-testid^="member-"]').first().waitFor();
    await shot("pool");
    await noScriptErrors("pools");
  });
  await check("the resources and events pages load", async () => {
    await page.goto(BASE + "/resources");
    await page.locator('[data-testid="tenants-table"]').waitFor();
    await shot("resources");
    await page.goto(BASE + "/events");
    await page.locator('[data-testid="event-row"]').first().waitFor();
    await shot("events");
    await noScriptErrors("resources, events");
  });
  await check("a shared link opens the same filtered view", async () => {
    const fresh = await context.newPage();
    await fresh.goto(BASE + "/tasks?state=canceled");
    await fresh.locator(`[data-testid="task-row-${never}"]`).waitFor();
    await fresh.close();
  });
  await check("no script errors anywhere", () => noScriptErrors("the whole run"));
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
