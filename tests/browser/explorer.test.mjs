// End-to-end test of the interest explorer served at `/`.
//
//   node tests/browser/explorer.test.mjs http://127.0.0.1:8080 [screenshot.png]
//
// Opens the page in Debian's chromium (playwright-core, no bundled browser), selects a user,
// checks that interest cards, the actions map and at least 10 recommendations render, posts a
// test engagement through the page and checks that the profile shows online actions, saves a
// screenshot, then checks that number and list attributes render, and that the Experiments view
// reports the quickstart's demo experiment with the answers and the engagement of this test
// (attributed by the answer's request id) and draws its daily chart, and that a partitioned
// fleet replica's report carries a warning (a merged one names its parts). Exits non-zero with a
// message on any failure.
import { chromium } from "playwright-core";

const base = process.argv[2] ?? "http://127.0.0.1:8080";
const screenshot = process.argv[3] ?? "explorer.png";
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const user = process.env.EXPLORER_USER ?? "68";

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(base + "/", { waitUntil: "networkidle" });
  check((await page.title()).includes("interest explorer"), `unexpected title ${await page.title()}`);

  // Choose the user through the picker, as a person would.
  await page.fill("#user-input", user);
  await page.click("#load");
  await page.waitForFunction((u) => document.body.dataset.shown === u, user);
  const cards = await page.locator(".cluster-card").count();
  const recs = await page.locator(".rec-item").count();
  const points = await page.locator("#map circle.point").count();
  check(cards >= 3, `expected at least 3 interest cards for user ${user}, found ${cards}`);
  check(recs >= 10, `expected at least 10 recommendations, found ${recs}`);
  check(points >= cards, `expected the map to show the user's actions, found ${points} points`);
  const firstTitle = await page.locator(".cluster-card .title").first().innerText();
  check(!firstTitle.startsWith("item "), `interest cards should show titles, got ${firstTitle}`);
  console.log(`user ${user}: ${cards} interests, ${points} actions on the map, ${recs} recommendations`);

  // Post a test engagement from the page: the online path must pick it up at once.
  await page.locator(".rec-item button.engage").first().click();
  await page.waitForFunction(
    () => document.body.dataset.shown && /online actions/.test(document.getElementById("interest-count").textContent),
    null,
    { timeout: 10000 },
  );
  console.log(`after one engagement: ${await page.locator("#interest-count").innerText()}`);

  check(errors.length === 0, `page errors: ${errors.join("; ")}`);
  await page.screenshot({ path: screenshot });
  console.log(`screenshot: ${screenshot}`);

  // Attributes are any JSON a catalog holds: numbers and lists render as text (the answers are
  // the server's, with their attributes rewritten in flight).
  await page.route("**/v1/users/*/recommendations*", async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    body.items.forEach((item, i) => (item.attributes = { title: 1000 + i, genres: ["Drama", "Comedy"] }));
    await route.fulfill({ response, json: body });
  });
  await page.fill("#user-input", "1");
  await page.click("#load");
  await page.waitForFunction(() => document.body.dataset.shown === "1");
  const rewritten = await page.locator(".rec-item").count();
  const firstRec = await page.locator(".rec-item .body").first().innerText();
  check(rewritten >= 10, `expected recommendations with number and list attributes, found ${rewritten}`);
  check(firstRec.includes("1000") && firstRec.includes("Drama, Comedy"), `unexpected rendering: ${firstRec}`);
  check(errors.length === 0, `page errors with number and list attributes: ${errors.join("; ")}`);
  console.log(`number and list attributes: ${firstRec.replace(/\s+/g, " ")}`);
  await page.unroute("**/v1/users/*/recommendations*");

  // The Experiments view: the answers this test was given are the demo experiment's impressions
  // and its engagement names one of them. Buffered impressions are written within 50 ms.
  await page.waitForTimeout(500);
  await page.click("#tab-experiments");
  await page.waitForFunction(() => document.body.dataset.report, null, { timeout: 30000 });
  const reported = await page.evaluate(() => document.body.dataset.report);
  check(reported === "quickstart", `the report did not render (${reported}): ${await page.locator("#exp-status").innerText()}`);
  const arms = await page.locator("tr.arm-row").evaluateAll((rows) =>
    rows.map((r) => ({ arm: r.dataset.arm, impressions: +r.dataset.impressions, engagements: +r.dataset.engagements })),
  );
  check(arms.length === 2, `expected the demo experiment's 2 arms, found ${JSON.stringify(arms)}`);
  const impressions = arms.reduce((n, a) => n + a.impressions, 0);
  const engagements = arms.reduce((n, a) => n + a.engagements, 0);
  // User 68: shown, engaged, shown again; user 1: shown (the rewritten answer was still recorded).
  check(impressions >= 3, `expected at least 3 impressions, found ${JSON.stringify(arms)}`);
  check(engagements >= 1, `expected the engagement attributed, found ${JSON.stringify(arms)}`);
  const dayPoints = await page.locator("#chart-impressions circle.day-point").count();
  check(dayPoints >= 1, `expected the daily chart to show today's impressions, found ${dayPoints} points`);
  check(errors.length === 0, `page errors in the Experiments view: ${errors.join("; ")}`);
  await page.screenshot({ path: screenshot.replace(/\.png$/, "") + "-experiments.png" });
  console.log(`experiment: ${arms.map((a) => `${a.arm} ${a.impressions} impressions, ${a.engagements} engagements`).join("; ")}`);
  check((await page.locator("#exp-coverage").count()) === 0, "a single server's report must not speak of a fleet");

  // A replica of a partitioned fleet reports its partitions' users only, and the view must warn
  // of it; a report merged from the fleet names where each part came from. The reports are the
  // server's, with a replica's coverage written in (what a replica puts there is checked by the
  // fleet test, against a real partitioned fleet).
  const coverages = [
    [{ partitions: { held: [1], count: 3 } }, true, /Part of the fleet: this replica holds partitions 1 of 3/],
    [
      {
        partitions: { held: [0, 1, 2], count: 3 },
        parts: [{ server: "http://10.0.0.1:8080", partitions: [0, 1] }, { server: "http://10.0.0.2:8080", partitions: [2] }],
      },
      false,
      /The fleet's report: partitions 0, 1 from http:\/\/10\.0\.0\.1:8080; partitions 2 from http:\/\/10\.0\.0\.2:8080/,
    ],
  ];
  for (const [coverage, warns, expected] of coverages) {
    await page.route("**/v1/experiments/*/report*", async (route) => {
      const response = await route.fetch();
      await route.fulfill({ response, json: { ...(await response.json()), ...coverage } });
    });
    await page.click("#tab-interests");
    await page.click("#tab-experiments");
    await page.waitForFunction(() => document.body.dataset.report, null, { timeout: 30000 });
    const text = (await page.locator("#exp-coverage").innerText()).replace(/\s+/g, " ");
    check(expected.test(text), `unexpected coverage note for ${JSON.stringify(coverage)}: ${text}`);
    const bad = await page.locator("#exp-coverage.bad").count();
    check(bad === (warns ? 1 : 0), `the coverage note should ${warns ? "" : "not "}be a warning: ${text}`);
    check(errors.length === 0, `page errors with a fleet's report: ${errors.join("; ")}`);
    console.log(`coverage: ${text.slice(0, 90)}`);
    await page.unroute("**/v1/experiments/*/report*");
  }
} finally {
  await browser.close();
}
