// The browser checks, one function each: (page, base, shot) -> throws on failure.

const WAIT = { timeout: 20_000 };

/// Replaces the GraphiQL query editor's text and runs it.
async function runInGraphiql(page, query) {
  await page.waitForSelector(".graphiql-query-editor .CodeMirror", WAIT);
  await page.evaluate((text) => {
    document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror.setValue(text);
  }, query);
  // GraphiQL reads the editor through a debounced state update.
  await page.waitForTimeout(500);
  await page.click(".graphiql-execute-button");
}

async function resultText(page) {
  return page.evaluate(() => document.querySelector(".result-window .CodeMirror")?.CodeMirror.getValue() ?? "");
}

async function waitForResult(page, predicate, what) {
  const deadline = Date.now() + WAIT.timeout;
  let text = "";
  while (Date.now() < deadline) {
    text = await resultText(page);
    if (predicate(text)) return text;
    await page.waitForTimeout(200);
  }
  throw new Error(`${what}: result was ${text.slice(0, 400)}`);
}

export const checks = {
  async playground({ page, base, shot }) {
    await page.goto(`${base}/playground`, { waitUntil: "networkidle" });
    await runInGraphiql(page, "{ markets { symbol lastPrice } serverTime }");
    await waitForResult(page, (t) => t.includes("BTC-USD") && t.includes("serverTime"), "query");
    await shot("query");
    await runInGraphiql(page, "subscription { serverTime(intervalSeconds: 1) }");
    const first = await waitForResult(page, (t) => t.includes("serverTime"), "subscription");
    // A live subscription keeps replacing the result with later times.
    await waitForResult(page, (t) => t.includes("serverTime") && t !== first, "second subscription event");
    await shot("subscription");
  },
};
