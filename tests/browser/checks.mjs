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

/// One GraphQL request from the test itself (setting up accounts and money).
async function api(base, query, variables, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${base}/graphql`, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  const body = await response.json();
  if (body.errors) throw new Error(`${query.slice(0, 60)}…: ${JSON.stringify(body.errors)}`);
  return body.data;
}

async function cellText(page, selector) {
  return (await page.textContent(selector).catch(() => null))?.trim() ?? null;
}

checks.dashboard = async function ({ page, base, shot }) {
  const admin = process.env.ADMIN_EMAIL;
  const adminPassword = process.env.ADMIN_PASSWORD;
  if (!admin || !adminPassword) throw new Error("set ADMIN_EMAIL and ADMIN_PASSWORD (the server's first admin)");
  const email = `dashboard-${Date.now()}@example.com`;
  const password = "a long browser test password 7";
  const registered = await api(base, "mutation($i: RegisterInput!) { register(input: $i) { user { id } } }",
    { i: { email, password, displayName: "Browser test" } });
  const adminLogin = await api(base, "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
    { i: { email: admin, password: adminPassword } });
  await api(base, "mutation($i: CreditDepositInput!) { creditDeposit(input: $i) { id } }",
    { i: { userId: registered.register.user.id, asset: "USD", amount: "100000", reference: `browser-${Date.now()}` } },
    adminLogin.login.accessToken);

  await page.goto(`${base}/dashboard`, { waitUntil: "networkidle" });
  await page.fill("#sign-in [name=email]", email);
  await page.fill("#sign-in [name=password]", password);
  await page.click("#sign-in button[type=submit]");
  await page.waitForSelector("#signed-in:not([hidden])", WAIT);
  await page.waitForSelector("#live.on", WAIT);
  await page.waitForSelector("#positions tr[data-asset=USD]", WAIT);
  const usdBefore = await cellText(page, "#positions tr[data-asset=USD] td:nth-child(3)");
  if (usdBefore !== "100000" && usdBefore !== "100000.00") throw new Error(`USD available before trading: ${usdBefore}`);
  await shot("signed-in");

  // The demo bot keeps a book on BTC-USD: a market buy fills against it.
  await page.selectOption("#ticket [name=market]", "BTC-USD");
  await page.selectOption("#ticket [name=side]", "BUY");
  await page.selectOption("#ticket [name=type]", "MARKET");
  await page.fill("#ticket [name=quantity]", "0.002");
  await page.click("#preview");
  await page.waitForFunction(() => document.querySelector("#ticket-result").textContent.includes("Would be"), null, WAIT);
  await page.click("#ticket button[type=submit]");
  // The fill arrives over the subscription, and the balance changes, without a reload.
  await page.waitForSelector("#fills li", WAIT);
  const fill = await cellText(page, "#fills li");
  if (!fill.includes("BUY") || !fill.includes("BTC-USD")) throw new Error(`unexpected fill line: ${fill}`);
  await page.waitForFunction(() => {
    const cell = document.querySelector("#positions tr[data-asset=USD] td:nth-child(3)");
    return cell && !["100000", "100000.00"].includes(cell.textContent.trim());
  }, null, WAIT);
  await page.waitForSelector("#positions tr[data-asset=BTC]", WAIT);
  // What was bought, less the taker fee taken in BTC: more than nothing, at most 0.002.
  const btc = await cellText(page, "#positions tr[data-asset=BTC] td:nth-child(2)");
  if (!/^0\.00[0-2]\d*$/.test(btc) || /^0\.0+$/.test(btc)) throw new Error(`BTC quantity after the fill: ${btc}`);
  if (await page.isVisible("#sign-in")) throw new Error("the sign-in form is still shown after signing in");
  await page.waitForFunction(() => /\d/.test(document.querySelector("#ticker").textContent), null, WAIT);
  await shot("after-fill");
};
