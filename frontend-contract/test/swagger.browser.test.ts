// Swagger UI in a real browser (Debian's headless Chromium, driven by playwright-core): the
// page served at /docs/ lists the tagged operations, and "Try it out" on a public endpoint
// gets a 200. A screenshot is kept in artifacts/ for people to look at.
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";

import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, expect, test } from "vitest";

import { LiveServer } from "./support/server";

const CHROMIUM = process.env.GI2_CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = join(import.meta.dirname, "..", "artifacts");

let server: LiveServer;
let browser: Browser;

beforeAll(async () => {
  server = await LiveServer.start();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // As root and offline: no sandbox, no background traffic to hosts this machine cannot reach.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

test("Swagger UI lists the tagged operations and runs a request", async () => {
  expect(existsSync(CHROMIUM), `${CHROMIUM} is installed by scripts/test`).toBe(true);
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await page.goto(`${server.baseUrl}/docs/`);
  await page.waitForSelector(".opblock-tag", { timeout: 30_000 });
  const tags = await page.$$eval(".opblock-tag", (nodes) => nodes.map((n) => n.getAttribute("data-tag")));
  for (const tag of ["auth", "account", "generations", "credits", "billing", "ops"]) {
    expect(tags, `tag ${tag} is listed`).toContain(tag);
  }

  // The ops section: open GET /healthz, try it out, execute.
  const op = page.locator("#operations-ops-healthz");
  await op.locator(".opblock-summary").click();
  await op.getByRole("button", { name: "Try it out" }).click();
  await op.getByRole("button", { name: "Execute" }).click();
  const status = op.locator(".live-responses-table tr.response .response-col_status").first();
  await expect.poll(async () => (await status.textContent())?.trim(), { timeout: 15_000 }).toBe("200");

  await status.scrollIntoViewIfNeeded();
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "swagger-ui.png"), fullPage: false });
  await page.close();
}, 90_000);
