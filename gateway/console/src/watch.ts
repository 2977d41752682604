// Live watch of a terminated SSH session (approvers and admins): a write-only xterm.js fed by
// GET /v1/sessions/{id}/watch, a WebSocket of JSON text messages (the asciicast v2 header, event
// lines as they happen, gaps, and the end with the reason the user saw). Watching never
// affects the session; the Terminate button ends it for its user (who is told who did).

import { Terminal } from "@xterm/xterm";
import * as api from "./api";
import { h, show } from "./dom";

type WatchMessage =
  | { type: "header"; line: string }
  | { type: "events"; lines: string[] }
  | { type: "gap"; dropped: number }
  | { type: "end"; reason: string | null; message: string };

let current: { ws: WebSocket; term: Terminal } | null = null;

export function closeWatch(): void {
  if (!current) return;
  current.ws.close(1000, "page left");
  current.term.dispose();
  current = null;
}

export function watchPage(id: string, canTerminate: boolean): void {
  closeWatch();
  const status = h("div", { class: "notice", "data-testid": "watch-status" }, `Connecting to session ${id}…`);
  const box = h("div", { class: "term", "data-testid": "watch-terminal" });
  const notes = h("ul", { class: "muted mono", "data-testid": "watch-markers" });
  const terminate = h("button", { class: "danger", "data-testid": "watch-terminate" }, "Terminate");
  terminate.addEventListener("click", () => {
    terminate.disabled = true;
    api.terminate(id).then(
      () => say("Terminating… the session ends within a poll; its user is told who ended it."),
      (e: unknown) => {
        terminate.disabled = false;
        say(e instanceof Error ? e.message : String(e), true);
      },
    );
  });
  show(
    h("h1", {}, `Watching session ${id} `, canTerminate ? terminate : null),
    status,
    box,
    h("h2", {}, "Markers"),
    notes,
  );
  const term = new Terminal({ disableStdin: true, convertEol: false, scrollback: 5000, cursorBlink: false });
  term.open(box);
  const url = new URL(`/v1/sessions/${encodeURIComponent(id)}/watch`, location.href);
  url.protocol = "wss:";
  const ws = new WebSocket(url.toString());
  current = { ws, term };
  let ended = false;
  function say(text: string, bad = false): void {
    status.textContent = text;
    status.className = bad ? "notice bad" : "notice";
  }
  const note = (text: string) => notes.append(h("li", {}, text));
  ws.onmessage = (ev: MessageEvent) => {
    let m: WatchMessage;
    try {
      m = JSON.parse(String(ev.data)) as WatchMessage;
    } catch {
      return;
    }
    switch (m.type) {
      case "header": {
        const hd = JSON.parse(m.line) as { width?: number; height?: number; title?: string };
        if (hd.width && hd.height) term.resize(hd.width, hd.height);
        say(`● Watching live: ${hd.title ?? id}`);
        status.classList.add("live");
        break;
      }
      case "events":
        for (const l of m.lines) {
          let ev: [number, string, string];
          try {
            ev = JSON.parse(l) as [number, string, string];
          } catch {
            continue;
          }
          const [, code, data] = ev;
          if (code === "o") term.write(data);
          else if (code === "r") {
            const [c, r] = data.split("x").map(Number);
            if (c > 0 && r > 0) term.resize(c, r);
          } else if (code === "m") note(data);
        }
        break;
      case "gap":
        note(`${m.dropped || "some"} events were lost here`);
        break;
      case "end":
        ended = true;
        terminate.disabled = true;
        say(`Session ended: ${m.message}${m.reason ? ` (${m.reason})` : ""}`, m.reason === "terminated");
        break;
    }
  };
  ws.onclose = (ev: CloseEvent) => {
    if (!ended) say(`Watching stopped: ${ev.reason || "the connection to the gateway closed"}.`, true);
  };
}
