// Recording playback: asciinema-player fed by GET /v1/recordings/{id}/cast (asciicast v2).
// While the server has no cast for a recording (the endpoint is absent, or the session was a
// byte relay whose recording holds no terminal content), the page says so plainly.

import * as AsciinemaPlayer from "asciinema-player";
import { h, show } from "./dom";

let player: { dispose(): void } | null = null;

export function closePlayer(): void {
  player?.dispose();
  player = null;
}

export async function recordingPage(id: string): Promise<void> {
  closePlayer();
  const status = h("div", { class: "notice", "data-testid": "recording-status" }, "Loading the recording…");
  const box = h("div", { class: "player", "data-testid": "player" });
  show(h("h1", {}, `Recording of session ${id}`), status, box);
  const path = `/v1/recordings/${encodeURIComponent(id)}/cast`;
  let r: Response;
  try {
    r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  } catch (e) {
    status.textContent = `Could not reach the gateway: ${String(e)}`;
    status.className = "notice bad";
    return;
  }
  if (!r.ok) {
    let code = "";
    let message = "";
    try {
      const body = (await r.json()) as { code?: string; message?: string };
      code = body.code ?? "";
      message = body.message ?? "";
    } catch {
      /* not JSON */
    }
    status.className = "notice bad";
    if (r.status === 404 && code === "not_found") {
      // A byte relay's recording (psql, RDP, SSH as bytes): no terminal to play.
      status.textContent =
        `Playback is not available: ${message}. ` +
        "Terminal playback is for terminated SSH sessions and the browser terminal; a byte " +
        "relay's recording holds the bytes as relayed (encrypted for SSH and TLS), which " +
        "`wgctl recordings verify` checks.";
    } else {
      status.textContent = `Playback is not available: ${message || r.statusText} (${r.status}${code ? `, ${code}` : ""}).`;
    }
    return;
  }
  const cast = await r.text();
  status.textContent = "Press play to watch the session.";
  player = AsciinemaPlayer.create({ data: cast }, box, { fit: "width", idleTimeLimit: 2 });
}
