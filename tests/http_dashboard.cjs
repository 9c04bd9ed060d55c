// Loads herdd's /ui in headless Chromium (playwright-core, Debian's
// /usr/bin/chromium) and checks that every chart fills from the live
// snapshots (tests/http_dashboard.sh).
"use strict";
const path = require("path");
const fs = require("fs");
const { chromium } = require(path.join(process.env.NPM_DIR, "node_modules", "playwright-core"));

const url = process.env.HTTP_URL + "/ui";
const charts = ["c-throughput", "c-batch", "c-ttft", "c-tpot", "c-queue", "c-agents", "c-models",
                "c-cache", "c-memory", "c-bpf"];

(async () => {
  fs.mkdirSync(process.env.CHROME_PROFILE, { recursive: true });
  const ctx = await chromium.launchPersistentContext(process.env.CHROME_PROFILE, {
    executablePath: "/usr/bin/chromium", headless: true, viewport: { width: 1400, height: 1000 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
  const page = ctx.pages()[0] || await ctx.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  /* offline: nothing but herdd itself may be fetched */
  const foreign = [];
  await page.route("**/*", (route) => {
    if (!route.request().url().startsWith(process.env.HTTP_URL)) { foreign.push(route.request().url()); return route.abort(); }
    return route.continue();
  });
  await page.goto(url, { waitUntil: "load", timeout: 60000 });
  /* filled: every line chart has several points, the agents chart and the
   * models chart have bars, and some tokens were counted */
  await page.waitForFunction((ids) => {
    const c = window.herdCharts;
    if (!c || window.herdSnapshots < 6) return false;
    return ids.every((id) => c[id] && c[id].data.datasets[0].data.length > 0) &&
      c["c-agents"].data.labels.length >= 3 && c["c-agents"].data.datasets[0].data.some((v) => v > 0) &&
      c["c-throughput"].data.datasets[0].data.some((v) => v > 0);
  }, charts, { timeout: 120000, polling: 250 });
  const dom = await page.evaluate((ids) => ({
    canvases: ids.filter((id) => { const e = document.getElementById(id); return e && e.width > 0 && e.height > 0; }).length,
    snapshots: Number(document.body.dataset.snapshots),
    status: document.getElementById("status").textContent,
    agents: window.herdCharts["c-agents"].data.labels,
    models: window.herdCharts["c-models"].data.labels,
    ttftP95: Math.max(...window.herdCharts["c-ttft"].data.datasets[1].data),
  }), charts);
  await page.screenshot({ path: process.env.DASHBOARD_PNG, fullPage: true });
  await ctx.close();
  const fail = [];
  if (dom.canvases !== charts.length) fail.push(`${dom.canvases} of ${charts.length} charts drawn`);
  if (!(dom.snapshots >= 6)) fail.push(`only ${dom.snapshots} snapshots`);
  if (!/^live/.test(dom.status)) fail.push(`status '${dom.status}'`);
  if (!["planner", "coder", "critic"].every((a) => dom.agents.some((l) => l.includes(a)))) fail.push(`agents ${dom.agents}`);
  if (!dom.models.some((l) => l.startsWith(process.env.MODEL))) fail.push(`models ${dom.models}`);
  if (!(dom.ttftP95 > 0)) fail.push("no TTFT p95");
  if (errors.length) fail.push(`page errors: ${errors.join("; ")}`);
  if (foreign.length) fail.push(`fetched from elsewhere: ${foreign.join(", ")}`);
  console.log(JSON.stringify(dom));
  if (fail.length) { console.log("FAIL " + fail.join("; ")); console.log("0 passed, 1 failed"); process.exit(1); }
  console.log("screenshot: " + process.env.DASHBOARD_PNG);
  console.log("1 passed, 0 failed");
})().catch((e) => { console.log("FAIL " + (e.stack || e)); console.log("0 passed, 1 failed"); process.exit(1); });
