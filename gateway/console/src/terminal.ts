// The browser terminal: xterm.js over the console's WebSocket. Binary frames carry terminal
// bytes; JSON text frames carry control (resize from here; open, notice, end, error from the
// server). The gateway's terminating SSH front end answers: `open` names the session at once,
// notices say what it waits for (an approver) and when the shell is connected, `end` says why
// it ended (denied, terminated, the shell exited …). A target not in SSH mode gets an
// `ssh_unavailable` error and this page says so.

import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { h, show } from "./dom";

type Control =
  | { type: "open"; session: string }
  | { type: "notice"; message: string }
  | { type: "end"; reason: string }
  | { type: "error"; code: string; message: string };

let current: { ws: WebSocket; term: Terminal; onResize: () => void } | null = null;

export function closeTerminal(): void {
  if (!current) return;
  window.removeEventListener("resize", current.onResize);
  current.ws.close(1000, "page left");
  current.term.dispose();
  current = null;
}

export function terminalPage(target: string): void {
  closeTerminal();
  const status = h("div", { class: "notice", "data-testid": "terminal-status" }, `Connecting to ${target}…`);
  const box = h("div", { class: "term", "data-testid": "terminal" });
  const after = h("p", { "data-testid": "terminal-links" });
  const disconnect = h("button", { "data-testid": "terminal-close" }, "Disconnect");
  show(h("h1", {}, `Terminal: ${target} `, disconnect), status, box, after);
  const term = new Terminal({ cursorBlink: true, convertEol: false, scrollback: 5000 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  // The size the page asked for, for people and tests to compare with the remote `stty size`.
  const sized = () => {
    box.dataset.cols = String(term.cols);
    box.dataset.rows = String(term.rows);
  };
  sized();
  const url = new URL(`/console/api/terminal/${encodeURIComponent(target)}`, location.href);
  url.protocol = "wss:";
  url.searchParams.set("cols", String(term.cols));
  url.searchParams.set("rows", String(term.rows));
  const ws = new WebSocket(url.toString());
  ws.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  const onResize = () => fit.fit();
  window.addEventListener("resize", onResize);
  current = { ws, term, onResize };
  let ended = false;
  let session = "";
  const say = (text: string, bad = false) => {
    status.textContent = text;
    status.className = bad ? "notice bad" : "notice";
  };
  const finished = () => {
    ended = true;
    disconnect.hidden = true;
    term.options.cursorBlink = false;
    if (session) {
      after.replaceChildren(
        h("a", { href: `#/recordings/${encodeURIComponent(session)}`, "data-testid": "terminal-recording" }, "Play the recording"),
        " · ",
        h("a", { href: `#/terminal/${encodeURIComponent(target)}` }, "Open a new terminal"),
      );
    }
  };
  disconnect.addEventListener("click", () => {
    ws.close(1000, "disconnected");
    say("Disconnected.");
    finished();
  });
  ws.onmessage = (ev: MessageEvent) => {
    if (ev.data instanceof ArrayBuffer) {
      term.write(new Uint8Array(ev.data));
      return;
    }
    let c: Control;
    try {
      c = JSON.parse(String(ev.data)) as Control;
    } catch {
      return;
    }
    switch (c.type) {
      case "open":
        session = c.session;
        box.dataset.session = c.session;
        say(`Session ${c.session}: connecting to ${target}…`);
        term.focus();
        break;
      case "notice":
        say(c.message);
        break;
      case "end":
        say(`Session ended: ${c.reason}`, true);
        finished();
        break;
      case "error":
        ended = true;
        box.hidden = true;
        disconnect.hidden = true;
        say(c.message, true);
        break;
    }
  };
  ws.onclose = () => {
    if (!ended) {
      say("The connection to the gateway closed.", true);
      finished();
    }
  };
  term.onData((d) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(d));
  });
  term.onBinary((d) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const b = new Uint8Array(d.length);
    for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 0xff;
    ws.send(b);
  });
  term.onResize(({ cols, rows }) => {
    sized();
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
  });
}
