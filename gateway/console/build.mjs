// Builds the console into dist/ (checked in; the gateway embeds it), or with --check rebuilds
// into a temporary directory and fails when dist/ differs from what the sources make.
// Steps: type-check (tsc), bundle (esbuild: app.js, app.css), copy index.html, and write the
// licences of every npm package that ended up in the bundle (THIRD-PARTY-LICENSES.txt).
//   node build.mjs          rebuild dist/
//   node build.mjs --check  fail on drift (the test suite runs this)

import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, mkdirSync, writeFileSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = dirname(fileURLToPath(import.meta.url));
const check = process.argv.includes("--check");
const dist = join(root, "dist");

function typecheck() {
  const tsc = join(root, "node_modules", ".bin", "tsc");
  execFileSync(tsc, ["-p", join(root, "tsconfig.json")], { stdio: "inherit" });
}

// The npm packages (name, version, licence text) bundled, from esbuild's metafile inputs, plus
// their runtime dependencies: a package may ship its dependencies pre-bundled in its own dist
// (asciinema-player carries solid-js that way), so their code is in app.js too.
function licences(metafile) {
  const pkgs = new Map();
  const add = (name) => {
    if (pkgs.has(name)) return;
    const dir = join(root, "node_modules", ...name.split("/"));
    const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
    const file = readdirSync(dir).find((f) => /^(licen[sc]e|copying)(\.(md|txt))?$/i.test(f));
    if (!file) throw new Error(`${name}: no licence file in the npm package; cannot ship it`);
    pkgs.set(name, { name, version: meta.version, license: meta.license, text: readFileSync(join(dir, file), "utf8").trim() });
    for (const dep of Object.keys(meta.dependencies ?? {})) add(dep);
  };
  for (const input of Object.keys(metafile.inputs)) {
    const parts = input.split(/[\\/]/);
    const at = parts.lastIndexOf("node_modules");
    if (at < 0) continue;
    add(parts[at + 1].startsWith("@") ? `${parts[at + 1]}/${parts[at + 2]}` : parts[at + 1]);
  }
  const list = [...pkgs.values()].sort((a, b) => a.name.localeCompare(b.name));
  const head = "Third-party software bundled into the Wardengate console (app.js, app.css).\n\n" +
    list.map((p) => `- ${p.name} ${p.version} (${p.license})`).join("\n") + "\n";
  return head + list.map((p) => `\n${"=".repeat(78)}\n${p.name} ${p.version} (${p.license})\n${"=".repeat(78)}\n\n${p.text}\n`).join("");
}

async function build(out) {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: { app: "src/main.ts" },
    outdir: out,
    bundle: true,
    format: "esm",
    target: ["chrome110", "firefox115", "safari16"],
    minify: true,
    legalComments: "none",
    charset: "utf8",
    metafile: true,
    logLevel: "warning",
  });
  copyFileSync(join(root, "src", "index.html"), join(out, "index.html"));
  writeFileSync(join(out, "THIRD-PARTY-LICENSES.txt"), licences(result.metafile));
}

function files(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(relative(dir, p).split(sep).join("/"));
    }
  };
  if (existsSync(dir)) walk(dir);
  return out.sort();
}

typecheck();
if (check) {
  const tmp = mkdtempSync(join(tmpdir(), "wg-console-"));
  try {
    await build(tmp);
    const want = files(tmp);
    const have = files(dist);
    const drift = [];
    for (const f of new Set([...want, ...have])) {
      if (!want.includes(f)) drift.push(`${f}: in dist/ but not built from the sources`);
      else if (!have.includes(f)) drift.push(`${f}: built from the sources but missing from dist/`);
      else if (!readFileSync(join(tmp, f)).equals(readFileSync(join(dist, f)))) drift.push(`${f}: differs from what the sources build`);
    }
    if (drift.length > 0) {
      console.error("console: dist/ drifted from the sources (rebuild with `./task console` and commit):\n  " + drift.join("\n  "));
      process.exit(1);
    }
    console.log(`console: dist/ matches the sources (${want.length} files)`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
} else {
  await build(dist);
  console.log(`console: built ${files(dist).join(", ")}`);
}
