// Small DOM helpers: every text goes through textContent, never innerHTML.

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | boolean | ((e: Event) => void) | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return el;
}

// The page (URL hash) whose content `show` may put on screen. A page that started for another
// hash (its fetch returned after the user moved on) is ignored, so a slow page never replaces a
// newer one.
let current = "";

/** Starts a page for the current URL hash: from now on only it may `show`. */
export function beginPage(): void {
  current = location.hash;
}

/** Replaces the main content, unless the user has moved to another page since it began. */
export function show(...nodes: Child[]): void {
  if (location.hash !== current) return;
  const main = document.getElementById("main");
  if (!main) return;
  main.replaceChildren();
  for (const n of nodes) if (n) main.append(n);
}

export function when(ms: number | null | undefined): string {
  return ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "—";
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
