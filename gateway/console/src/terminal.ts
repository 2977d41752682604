// The browser terminal: xterm.js over the console's WebSocket. Binary frames carry terminal
// bytes; JSON text frames carry control (resize from here; open, notice, end, error from the
// server). Until the gateway has a terminating SSH front end for a target, the server answers
// with an `ssh_unavailable` error and this page says so.

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
  show(h("h1", {}, `Terminal: ${target}`), status, box);
  const term = new Terminal({ cursorBlink: true, convertEol: false, scrollback: 5000 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
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
  const say = (text: string, bad = false) => {
    status.textContent = text;
    status.className = bad ? "notice bad" : "notice";
  };
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
        say(`Connected to ${target} (session ${c.session}).`);
        term.focus();
        break;
      case "notice":
        say(c.message);
        break;
      case "end":
        ended = true;
        say(`Session ended: ${c.reason}`);
        break;
      case "error":
        ended = true;
        box.hidden = true;
        say(c.message, true);
        break;
    }
  };
  ws.onclose = () => {
    if (!ended) say("The connection to the gateway closed.", true);
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
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
  });
}
