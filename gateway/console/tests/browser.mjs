// Browser test of the web console in headless Chromium (Debian's), driven by playwright-core.
// e2e/tests/console.rs runs it against a real `wardengate dev` with a real session waiting for
// approval, in two phases around a token revocation it does with wgctl:
//   node browser.mjs signin-approve   sign in, list targets, approve SESSION from the queue and
//                                     see it leave, sign out (the old cookie is then refused),
//                                     sign in again and save the cookie for phase two
//   node browser.mjs after-revoke     the saved cookie is refused now that its token is revoked
// and, against a `wardengate dev --ssh-listen` whose targets are a real sshd (terminated SSH):
//   node browser.mjs terminal         open the terminal to WG_TARGET, type a command and see its
//                                     output, resize the page and see `stty size` follow, exit
//                                     the shell, then play the session's recording as
//                                     WG_APPROVER_TOKEN
//   node browser.mjs terminal-approval  open the terminal to WG_TARGET (needs an approver), see
//                                     the waiting message, write WG_OUT/approval.waiting (the
//                                     session id) for the test to approve with wgctl, then see
//                                     the shell appear; disconnect
//   node browser.mjs terminal-terminate  open a shell, write WG_OUT/terminate.ready for the test
//                                     to terminate the session with wgctl, see the reason
//   node browser.mjs terminal-watch   a user opens a shell to WG_TARGET and types a command; an
//                                     approver (WG_APPROVER_TOKEN), on a second page, finds the
//                                     session on the Sessions page, watches it (the earlier
//                                     output, then a command typed while watching), terminates
//                                     it with the watch page's button; both pages say why it
//                                     ended
// Environment: WG_URL (https://127.0.0.1:PORT), WG_TOKEN (an approver's), WG_TARGET,
// WG_SESSION, WG_OUT (a directory for screenshots and the saved cookie), WG_CHROMIUM (default
// /usr/bin/chromium). Chromium is kept off the network: every host name resolves to nothing,
// every address but 127.0.0.1 goes to a dead proxy, background services are off, and any
// request the page makes to another host fails the test.
// Prints one JSON line of findings per phase; exits non-zero on the first failed expectation.

import { existsSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium, request } from "playwright-core";

const phase = process.argv[2];
const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env("WG_URL");
const out = env("WG_OUT");
const executablePath = process.env.WG_CHROMIUM || "/usr/bin/chromium";
if (!existsSync(executablePath)) {
  throw new Error(`${executablePath} not found: install Debian's chromium (scripts/install-deps.sh)`);
}
if (new URL(base).hostname !== "127.0.0.1") throw new Error(`WG_URL must be on 127.0.0.1: ${base}`);

const OFFLINE_ARGS = [
  "--headless=new",
  "--no-sandbox", // CI runs as root
  "--no-first-run",
  "--no-default-browser-check",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-default-apps",
  "--disable-domain-reliability",
  "--disable-client-side-phishing-detection",
  "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater",
  "--metrics-recording-only",
  "--no-pings",
  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
  "--proxy-server=http://127.0.0.1:9",
  "--proxy-bypass-list=127.0.0.1",
];

// Tells the test something (a file in WG_OUT it waits for), written whole: a temporary file
// renamed into place, so the test never reads it half-written.
function signal(name, content) {
  writeFileSync(join(out, `${name}.tmp`), content);
  renameSync(join(out, `${name}.tmp`), join(out, name));
}

function expect(ok, what) {
  if (!ok) throw new Error(`expected: ${what}`);
}

const offHost = [];
async function launch() {
  const browser = await chromium.launch({ executablePath, args: OFFLINE_ARGS, headless: true });
  return browser;
}

async function newContext(browser, storageState) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, storageState, viewport: { width: 1280, height: 800 } });
  await ctx.route("**/*", (route) => {
    const u = new URL(route.request().url());
    if (u.hostname !== "127.0.0.1" && u.protocol !== "data:" && u.protocol !== "blob:") {
      offHost.push(u.href);
      return route.abort();
    }
    return route.continue();
  });
  return ctx;
}

// GET path with only `cookie` as credentials, outside the browser: what the server says to it.
async function withCookie(cookie, path) {
  const api = await request.newContext({ ignoreHTTPSErrors: true, extraHTTPHeaders: { cookie: `__Host-wg_console=${cookie}` } });
  const r = await api.get(base + path);
  const body = await r.json().catch(() => ({}));
  await api.dispose();
  return { status: r.status(), code: body.code ?? null };
}

async function signIn(page, token) {
  await page.goto(base + "/");
  await page.getByTestId("token").waitFor();
  await page.getByTestId("token").fill(token);
  await page.getByTestId("sign-in").click();
  await page.getByTestId("who").waitFor();
}

async function signinApprove() {
  const token = env("WG_TOKEN");
  const target = env("WG_TARGET");
  const session = env("WG_SESSION");
  const browser = await launch();
  const ctx = await newContext(browser);
  const page = await ctx.newPage();
  const found = { phase };

  await signIn(page, token);
  expect(!page.url().includes(token), "the token never appears in the URL");
  const cookies = await ctx.cookies();
  const c = cookies.find((k) => k.name === "__Host-wg_console");
  expect(c, "a __Host-wg_console cookie after sign-in");
  expect(c.httpOnly && c.secure && c.sameSite === "Strict", `HttpOnly, Secure, SameSite=Strict: ${JSON.stringify(c)}`);
  expect(!(await page.evaluate(() => document.cookie)).includes("wg_console"), "the cookie is invisible to scripts");
  expect(!(await page.evaluate(() => JSON.stringify({ ...localStorage, ...sessionStorage }))).includes(token), "the token is not stored in the page");
  found.who = await page.getByTestId("who").textContent();

  // Targets.
  await page.getByTestId(`target-${target}`).waitFor();
  found.targets = await page.getByTestId("targets").locator("tbody tr").count();

  // The approvals queue, live over the event stream.
  await page.goto(base + "/#/approvals");
  await page.getByTestId(`pending-${session}`).waitFor();
  await page.getByText("● live").waitFor();
  await page.screenshot({ path: join(out, "console-approvals.png"), fullPage: true });
  // A second tab watches the same queue and does nothing: the request can only leave it
  // through the event stream.
  const watcher = await ctx.newPage();
  await watcher.goto(base + "/#/approvals");
  await watcher.getByTestId(`pending-${session}`).waitFor();
  await watcher.getByText("● live").waitFor();
  await page.getByTestId(`approve-${session}`).click();
  await page.getByTestId(`pending-${session}`).waitFor({ state: "detached" });
  found.left_queue = true;
  await watcher.getByTestId(`pending-${session}`).waitFor({ state: "detached", timeout: 15000 });
  found.left_watching_tab_via_stream = true;
  await watcher.close();
  await page.screenshot({ path: join(out, "console-approved.png"), fullPage: true });

  // Sessions page shows it as live now.
  await page.goto(base + "/#/sessions");
  await page.getByTestId(`session-${session}`).waitFor();
  found.session_row = (await page.getByTestId(`session-${session}`).textContent())?.replace(/\s+/g, " ");

  // The terminal page says plainly that SSH mode is not there (no fake shell).
  await page.goto(base + `/#/terminal/${target}`);
  await page.getByText("SSH mode is not available").waitFor();
  found.terminal = await page.getByTestId("terminal-status").textContent();
  expect(await page.getByTestId("terminal").isHidden(), "no terminal is shown without SSH mode");
  // Playback says why there is nothing to play while the server serves no cast.
  await page.goto(base + `/#/recordings/${session}`);
  await page.getByText("Playback is not available").waitFor();
  found.playback = await page.getByTestId("recording-status").textContent();

  // Sign out: the old cookie is refused from then on.
  const old = c.value;
  await page.getByTestId("sign-out").click();
  await page.getByTestId("token").waitFor();
  expect((await ctx.cookies()).every((k) => k.name !== "__Host-wg_console"), "sign-out clears the cookie");
  found.old_cookie_after_sign_out = await withCookie(old, "/v1/targets");
  expect(found.old_cookie_after_sign_out.status === 401, `old cookie refused after sign-out: ${JSON.stringify(found.old_cookie_after_sign_out)}`);

  // A page without the CSRF header cannot write with the cookie.
  await signIn(page, token);
  const forged = await page.evaluate(async () => {
    const r = await fetch("/v1/targets", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "forged", host: "127.0.0.1", port: 1 }) });
    return { status: r.status, code: (await r.json()).code };
  });
  expect(forged.status === 403 && forged.code === "csrf_refused", `a write without the CSRF header is refused: ${JSON.stringify(forged)}`);
  found.write_without_csrf = forged;
  await ctx.storageState({ path: join(out, "state.json") });
  found.off_host_requests = offHost;
  expect(offHost.length === 0, `no request left 127.0.0.1: ${offHost.join(", ")}`);
  await browser.close();
  console.log(JSON.stringify(found));
}

async function afterRevoke() {
  const browser = await launch();
  const ctx = await newContext(browser, join(out, "state.json"));
  const saved = (await ctx.cookies()).find((k) => k.name === "__Host-wg_console");
  expect(saved, "phase one saved a cookie");
  const found = { phase };
  found.cookie_after_revoke = await withCookie(saved.value, "/v1/targets");
  expect(found.cookie_after_revoke.status === 401, `cookie refused after revocation: ${JSON.stringify(found.cookie_after_revoke)}`);
  const page = await ctx.newPage();
  await page.goto(base + "/#/targets");
  await page.getByTestId("token").waitFor();
  found.page_shows_sign_in = true;
  found.page_says = await page.getByTestId("signed-out-reason").textContent();
  expect(found.page_says.includes("revoked"), `the page says why: ${found.page_says}`);
  await page.screenshot({ path: join(out, "console-revoked.png"), fullPage: true });
  expect(offHost.length === 0, `no request left 127.0.0.1: ${offHost.join(", ")}`);
  await browser.close();
  console.log(JSON.stringify(found));
}

// ---- the browser terminal ----

const statusOf = (page) => page.getByTestId("terminal-status");

// Waits until the terminal page's status says `text` (a substring); returns the status.
async function statusSays(page, text, timeout = 30000) {
  await page.waitForFunction(
    (t) => document.querySelector('[data-testid="terminal-status"]')?.textContent?.includes(t),
    text,
    { timeout },
  );
  return statusOf(page).textContent();
}

// What xterm shows (its rendered rows, the visible part of its buffer), as one string.
const screen = (page) => page.evaluate(() => document.querySelector('[data-testid="terminal"] .xterm-rows')?.textContent ?? "");

// Waits until the xterm in element `testid` (the terminal page's by default) shows a match of
// `re` (a RegExp source); returns the match groups.
async function shows(page, re, timeout = 30000, testid = "terminal") {
  const handle = await page.waitForFunction(
    ([src, id]) => {
      const text = document.querySelector(`[data-testid="${id}"] .xterm-rows`)?.textContent ?? "";
      const m = text.match(new RegExp(src));
      return m ? Array.from(m) : null;
    },
    [re, testid],
    { timeout },
  );
  return handle.jsonValue();
}

async function typeLine(page, line) {
  await page.getByTestId("terminal").click();
  await page.keyboard.type(line);
  await page.keyboard.press("Enter");
}

async function openTerminal(page, target) {
  // Sign-in lands on the targets page; let it finish rendering before leaving it (a page still
  // loading when the hash changes would replace the terminal when its fetch returns).
  await page.getByTestId(`target-${target}`).waitFor();
  await page.goto(base + `/#/terminal/${encodeURIComponent(target)}`);
  await page.waitForFunction(
    () =>
      document.querySelector('[data-testid="terminal"]')?.dataset.session ||
      document.querySelector('[data-testid="terminal-status"]')?.classList.contains("bad"),
  );
  const session = await page.getByTestId("terminal").getAttribute("data-session");
  expect(session, `a session: the page says ${await statusOf(page).textContent()}`);
  return session;
}

async function terminal() {
  const token = env("WG_TOKEN");
  const target = env("WG_TARGET");
  const browser = await launch();
  const ctx = await newContext(browser);
  const page = await ctx.newPage();
  const found = { phase };
  await signIn(page, token);
  found.session = await openTerminal(page, target);
  found.connected = await statusSays(page, "connected to");

  // A command and its output, in xterm.
  await typeLine(page, "echo hello-$((6*7))-marker");
  found.output = (await shows(page, "hello-42-marker"))[0];

  // The remote pty follows the browser's size: before and after resizing the page.
  const dims = async () => {
    const t = page.getByTestId("terminal");
    return `${await t.getAttribute("data-rows")}x${await t.getAttribute("data-cols")}`;
  };
  found.page_size_before = await dims();
  await typeLine(page, "echo sz1-$(stty size | tr ' ' x)-end");
  found.stty_before = (await shows(page, "sz1-(\\d+x\\d+)-end"))[1];
  expect(found.stty_before === found.page_size_before, `stty size ${found.stty_before} = the page's ${found.page_size_before}`);
  await page.setViewportSize({ width: 900, height: 560 });
  await page.waitForFunction((before) => {
    const t = document.querySelector('[data-testid="terminal"]');
    return t && `${t.dataset.rows}x${t.dataset.cols}` !== before;
  }, found.page_size_before);
  found.page_size_after = await dims();
  await typeLine(page, "echo sz2-$(stty size | tr ' ' x)-end");
  found.stty_after = (await shows(page, "sz2-(\\d+x\\d+)-end"))[1];
  expect(found.stty_after === found.page_size_after, `stty size ${found.stty_after} = the page's ${found.page_size_after} after the resize`);
  expect(found.stty_after !== found.stty_before, "the size changed");
  await page.screenshot({ path: join(out, "console-terminal.png"), fullPage: true });

  // Leave the shell: the page says how it ended and links the recording.
  await typeLine(page, "exit 7");
  found.ended = await statusSays(page, "Session ended");
  expect(found.ended.includes("the shell exited with status 7"), `the end is explained: ${found.ended}`);

  // The recording of what was just done, played back in the console. Casts are for approvers
  // (GET /v1/recordings/{id}/cast), so an approver signs in and follows the same link.
  const link = await page.getByTestId("terminal-recording").getAttribute("href");
  expect(link === `#/recordings/${found.session}`, `the page links the recording: ${link}`);
  const approverCtx = await newContext(browser);
  const approver = await approverCtx.newPage();
  await signIn(approver, env("WG_APPROVER_TOKEN"));
  await approver.getByTestId(`target-${target}`).waitFor();
  await approver.goto(base + "/" + link);
  await playback(approver, found);
  expect(offHost.length === 0, `no request left 127.0.0.1: ${offHost.join(", ")}`);
  await browser.close();
  console.log(JSON.stringify(found));
}

// Plays the recording page open in `page` and waits for the terminal's output in the player.
async function playback(page, found) {
  await page.waitForFunction(() => {
    const t = document.querySelector('[data-testid="recording-status"]')?.textContent ?? "";
    return t && !t.startsWith("Loading");
  });
  found.recording_status = await page.getByTestId("recording-status").textContent();
  expect(found.recording_status.includes("Press play"), `the recording plays: ${found.recording_status}`);
  await page.locator('[data-testid="player"] .ap-overlay-start').click();
  await page.waitForFunction(
    () => document.querySelector('[data-testid="player"]')?.textContent?.includes("hello-42-marker"),
    null,
    { timeout: 60000 },
  );
  found.playback_shows_output = true;
  await page.screenshot({ path: join(out, "console-playback.png"), fullPage: true });
}

async function terminalApproval() {
  const token = env("WG_TOKEN");
  const target = env("WG_TARGET");
  const browser = await launch();
  const ctx = await newContext(browser);
  const page = await ctx.newPage();
  const found = { phase };
  await signIn(page, token);
  found.session = await openTerminal(page, target);
  found.waiting = await statusSays(page, "needs an approval");
  expect(found.waiting.includes(found.session), `the waiting message names the session: ${found.waiting}`);
  // Typed while waiting: kept and run once the shell is there.
  await typeLine(page, "echo typed-while-waiting-$((3*5))");
  await page.screenshot({ path: join(out, "console-terminal-waiting.png"), fullPage: true });
  signal("approval.waiting", found.session);
  found.connected = await statusSays(page, "connected to", 60000);
  found.early_input = (await shows(page, "typed-while-waiting-15"))[0];
  await typeLine(page, "echo approved-$((2*21))");
  found.output = (await shows(page, "approved-42"))[0];
  await page.getByTestId("terminal-close").click();
  found.closed = await statusSays(page, "Disconnected");
  expect(offHost.length === 0, `no request left 127.0.0.1: ${offHost.join(", ")}`);
  await browser.close();
  console.log(JSON.stringify(found));
}

async function terminalTerminate() {
  const token = env("WG_TOKEN");
  const target = env("WG_TARGET");
  const browser = await launch();
  const ctx = await newContext(browser);
  const page = await ctx.newPage();
  const found = { phase };
  await signIn(page, token);
  found.session = await openTerminal(page, target);
  found.connected = await statusSays(page, "connected to");
  await typeLine(page, "echo before-terminate-$((1+1))");
  await shows(page, "before-terminate-2");
  signal("terminate.ready", found.session);
  found.ended = await statusSays(page, "Session ended", 60000);
  expect(found.ended.includes("terminated by an operator"), `the reason is shown: ${found.ended}`);
  await page.screenshot({ path: join(out, "console-terminal-terminated.png"), fullPage: true });
  expect(offHost.length === 0, `no request left 127.0.0.1: ${offHost.join(", ")}`);
  await browser.close();
  console.log(JSON.stringify(found));
}

// What the watch page's xterm shows.
const watchShows = (page, re) => shows(page, re, 30000, "watch-terminal");

async function terminalWatch() {
  const target = env("WG_TARGET");
  const browser = await launch();
  const found = { phase };
  // The user's page: a shell, and a command before anyone watches.
  const user = await (await newContext(browser)).newPage();
  await signIn(user, env("WG_TOKEN"));
  found.session = await openTerminal(user, target);
  found.connected = await statusSays(user, "connected to");
  await typeLine(user, "echo before-watch-$((5*5))");
  await shows(user, "before-watch-25");

  // The approver's page: the session is on the Sessions page with a Watch link.
  const approver = await (await newContext(browser)).newPage();
  await signIn(approver, env("WG_APPROVER_TOKEN"));
  await approver.getByTestId(`target-${target}`).waitFor();
  await approver.goto(base + "/#/sessions");
  await approver.getByTestId(`watch-${found.session}`).click();
  await approver.waitForFunction(
    () => document.querySelector('[data-testid="watch-status"]')?.textContent?.includes("Watching live"),
  );
  found.watch_status = await approver.getByTestId("watch-status").textContent();
  // A late watcher starts with the recent screen…
  found.watch_earlier = (await watchShows(approver, "before-watch-25"))[0];
  // …and follows what happens while it watches.
  const typed = Date.now();
  await typeLine(user, "echo live-$((6*7))-seen");
  found.watch_live = (await watchShows(approver, "live-42-seen"))[0];
  found.watch_lag_ms = Date.now() - typed;
  found.watch_markers = await approver.getByTestId("watch-markers").textContent();
  expect(found.watch_markers.includes("shell"), `the markers list the shell: ${found.watch_markers}`);
  await approver.screenshot({ path: join(out, "console-watch.png"), fullPage: true });

  // Terminate from the watch page: the user's page and the watcher's both say why.
  await approver.getByTestId("watch-terminate").click();
  found.user_ended = await statusSays(user, "Session ended", 60000);
  expect(found.user_ended.includes("terminated by an operator"), `the user is told: ${found.user_ended}`);
  await approver.waitForFunction(
    () => document.querySelector('[data-testid="watch-status"]')?.textContent?.includes("Session ended"),
    null,
    { timeout: 60000 },
  );
  found.watch_ended = await approver.getByTestId("watch-status").textContent();
  await approver.screenshot({ path: join(out, "console-watch-terminated.png"), fullPage: true });
  await user.screenshot({ path: join(out, "console-terminal-terminated-by-watcher.png"), fullPage: true });
  expect(offHost.length === 0, `no request left 127.0.0.1: ${offHost.join(", ")}`);
  await browser.close();
  console.log(JSON.stringify(found));
}

if (phase === "signin-approve") await signinApprove();
else if (phase === "after-revoke") await afterRevoke();
else if (phase === "terminal") await terminal();
else if (phase === "terminal-approval") await terminalApproval();
else if (phase === "terminal-terminate") await terminalTerminate();
else if (phase === "terminal-watch") await terminalWatch();
else throw new Error(`unknown phase ${phase}`);
