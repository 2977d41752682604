// The Wardengate web console: sign-in, targets, live and past sessions, the approvals queue,
// recording playback and the browser terminal. A hash router keeps every page a plain URL
// without a token in it.

import "@xterm/xterm/css/xterm.css";
import "asciinema-player/dist/bundle/asciinema-player.css";
import "./style.css";

import * as api from "./api";
import type { Role, Session, SessionInfo } from "./api";
import { beginPage, bytes, h, show, when } from "./dom";
import { closePlayer, recordingPage } from "./player";
import { closeTerminal, terminalPage } from "./terminal";
import { closeWatch, watchPage } from "./watch";

let me: SessionInfo | null = null;
let events: EventSource | null = null;

const rank: Record<Role, number> = { user: 0, approver: 1, admin: 2 };
const allows = (r: Role) => me !== null && rank[me.role] >= rank[r];
const LIVE = new Set(["pending", "authorized", "active", "terminating"]);

function leavePage(): void {
  events?.close();
  events = null;
  closeTerminal();
  closePlayer();
  closeWatch();
}

function bar(): void {
  const header = document.getElementById("bar");
  if (!header) return;
  header.replaceChildren();
  header.append(h("strong", {}, "Wardengate"));
  if (!me) return;
  const page = location.hash.split("/")[1] ?? "targets";
  const link = (name: string, label: string) =>
    h("a", { href: `#/${name}`, class: page === name ? "active" : undefined }, label);
  header.append(link("targets", "Targets"), link("sessions", "Sessions"));
  if (allows("approver")) header.append(link("approvals", "Approvals"));
  header.append(
    h("span", { class: "who", "data-testid": "who" }, `${me.name} (${me.role})`),
    h("button", { "data-testid": "sign-out", onclick: () => void doSignOut() }, "Sign out"),
  );
}

function fail(e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  show(h("div", { class: "notice bad", "data-testid": "error" }, msg));
}

function signInPage(why?: string): void {
  leavePage();
  beginPage();
  me = null;
  bar();
  const input = h("input", {
    type: "password",
    name: "token",
    autocomplete: "off",
    placeholder: "wg_…",
    "data-testid": "token",
    required: true,
  });
  const err = h("p", { class: "error", "data-testid": "sign-in-error" });
  const form = h(
    "form",
    { class: "signin" },
    h("p", {}, "Paste your Wardengate token. It is exchanged for a session cookie once and never kept in the page or a URL."),
    h("p", {}, input),
    h("p", {}, h("button", { class: "primary", type: "submit", "data-testid": "sign-in" }, "Sign in")),
    err,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    input.value = "";
    api.signIn(token).then(
      (info) => {
        me = info;
        api.setCsrf(info.csrf);
        if (!location.hash || location.hash === "#/signin") location.hash = "#/targets";
        else void route();
      },
      (e: unknown) => {
        err.textContent = e instanceof Error ? e.message : String(e);
      },
    );
  });
  show(h("h1", {}, "Sign in"), why ? h("div", { class: "notice bad", "data-testid": "signed-out-reason" }, why) : null, form);
  input.focus();
}

async function doSignOut(): Promise<void> {
  try {
    await api.signOut();
  } catch {
    /* signed out either way */
  }
  api.setCsrf("");
  location.hash = "#/signin";
  signInPage("Signed out.");
}

async function targetsPage(): Promise<void> {
  const list = await api.targets();
  const rows = list.map((t) =>
    h(
      "tr",
      { "data-testid": `target-${t.name}` },
      h("td", {}, t.name),
      h("td", { class: "mono" }, `${t.host}:${t.port}`),
      h("td", {}, t.require_approval ? "required" : "—"),
      h("td", {}, h("a", { href: `#/terminal/${encodeURIComponent(t.name)}` }, "Terminal")),
    ),
  );
  show(
    h("h1", {}, "Targets"),
    list.length === 0
      ? h("p", { class: "muted" }, "No targets yet (wgctl targets add NAME --host H --port P).")
      : h(
          "table",
          { "data-testid": "targets" },
          h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Address"), h("th", {}, "Approval"), h("th", {}, ""))),
          h("tbody", {}, ...rows),
        ),
  );
}

function sessionRow(s: Session, refresh: () => void): HTMLTableRowElement {
  const live = LIVE.has(s.status);
  const mine = me !== null && s.token_id === me.token_id;
  const actions = h("td", {});
  if ((s.status === "active" || s.status === "terminating") && allows("approver")) {
    actions.append(h("a", { href: `#/watch/${encodeURIComponent(s.id)}`, "data-testid": `watch-${s.id}` }, "Watch"), " ");
  }
  if (live && (mine || allows("approver")) && s.status !== "pending") {
    actions.append(
      h(
        "button",
        {
          class: "danger",
          onclick: () => {
            api.terminate(s.id).then(refresh, fail);
          },
        },
        "Terminate",
      ),
    );
  }
  if (!live) actions.append(h("a", { href: `#/recordings/${encodeURIComponent(s.id)}` }, "Recording"));
  return h(
    "tr",
    { "data-testid": `session-${s.id}` },
    h("td", { class: "mono" }, s.id),
    h("td", {}, s.target_name),
    h("td", { class: live ? "live" : undefined }, s.status + (s.end_reason ? ` (${s.end_reason})` : "")),
    h("td", {}, when(s.created_at)),
    h("td", {}, when(s.ended_at)),
    h("td", {}, `${bytes(s.bytes_up)} ↑ ${bytes(s.bytes_down)} ↓`),
    actions,
  );
}

function sessionTable(list: Session[], refresh: () => void, testid: string): HTMLElement {
  if (list.length === 0) return h("p", { class: "muted", "data-testid": testid }, "None.");
  return h(
    "table",
    { "data-testid": testid },
    h(
      "thead",
      {},
      h("tr", {}, ...["Session", "Target", "Status", "Requested", "Ended", "Bytes", ""].map((c) => h("th", {}, c))),
    ),
    h("tbody", {}, ...list.map((s) => sessionRow(s, refresh))),
  );
}

async function sessionsPage(): Promise<void> {
  const refresh = () => void sessionsPage().catch(fail);
  const list = await api.sessions();
  show(
    h("h1", {}, "Sessions"),
    h("h2", {}, "Live"),
    sessionTable(list.filter((s) => LIVE.has(s.status)), refresh, "live-sessions"),
    h("h2", {}, "Past"),
    sessionTable(list.filter((s) => !LIVE.has(s.status)), refresh, "past-sessions"),
  );
}

async function approvalsPage(): Promise<void> {
  const state = h("span", { class: "muted", "data-testid": "queue-state" }, "connecting to the event stream…");
  const body = h("div", {});
  show(h("h1", {}, "Approvals ", state), body);
  const render = async () => {
    const list = await api.approvals();
    if (list.length === 0) {
      body.replaceChildren(h("p", { class: "muted", "data-testid": "queue-empty" }, "Nothing is waiting for a decision."));
      return;
    }
    const rows = list.map((s) => {
      const decide = (d: "approve" | "deny") => () => {
        api.decide(s.id, d).then(() => void render().catch(fail), fail);
      };
      return h(
        "tr",
        { "data-testid": `pending-${s.id}` },
        h("td", { class: "mono" }, s.id),
        h("td", {}, s.target_name),
        h("td", { class: "mono" }, s.token_id),
        h("td", {}, s.requested_from ?? "—"),
        h("td", {}, when(s.created_at)),
        h(
          "td",
          {},
          h("button", { class: "primary", "data-testid": `approve-${s.id}`, onclick: decide("approve") }, "Approve"),
          " ",
          h("button", { class: "danger", "data-testid": `deny-${s.id}`, onclick: decide("deny") }, "Deny"),
        ),
      );
    });
    body.replaceChildren(
      h(
        "table",
        { "data-testid": "queue" },
        h("thead", {}, h("tr", {}, ...["Session", "Target", "Token", "From", "Requested", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, ...rows),
      ),
    );
  };
  await render();
  // Live: the same server-sent event stream wgctl watches, authenticated by the cookie.
  events = new EventSource("/v1/events");
  events.onopen = () => {
    state.textContent = "● live";
    state.className = "live";
  };
  events.onerror = () => {
    state.textContent = "reconnecting…";
    state.className = "muted";
  };
  for (const kind of ["approval.requested", "approval.approved", "approval.denied", "session.ended", "session.started"]) {
    events.addEventListener(kind, () => void render().catch(fail));
  }
}

async function route(): Promise<void> {
  leavePage();
  beginPage();
  if (!me) {
    try {
      me = await api.whoAmI();
      api.setCsrf(me.csrf);
    } catch (e) {
      // No cookie is the ordinary first visit; anything else (revoked, expired) is worth saying.
      const said = e instanceof api.ApiError && e.code !== "unauthorized" ? e.message : undefined;
      signInPage(said);
      return;
    }
  }
  const [, page = "targets", arg = ""] = location.hash.split("/");
  bar();
  const param = decodeURIComponent(arg);
  try {
    switch (page) {
      case "sessions":
        return await sessionsPage();
      case "approvals":
        return await approvalsPage();
      case "recordings":
        return await recordingPage(param);
      case "terminal":
        return terminalPage(param);
      case "watch":
        return watchPage(param, allows("approver"));
      default:
        return await targetsPage();
    }
  } catch (e) {
    if (e instanceof api.ApiError && e.status === 401) return;
    fail(e);
  }
}

api.onSignedOut((why) => {
  if (me) signInPage(`Signed out: ${why}`);
});
window.addEventListener("hashchange", () => void route());
void route();
