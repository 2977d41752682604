# Wardengate task runner. `./task <recipe>` installs `just` first when it is missing.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Start `wardengate dev`: one process, embedded store, generated certificate; no services.
run *ARGS:
    cargo build --quiet -p wardengate --bins
    target/debug/wardengate dev {{ARGS}}

# Install what the suites need: Debian packages (postgresql, redis, patroni, haproxy, …),
# kubernetes-validate (offline Kubernetes schemas) into .tools/py with pip (python3-pip from apt
# when missing), cargo-nextest into .tools/bin (without it the suites run under `cargo test`), and
# the Kubernetes 1.37 tools built from Go modules (kube-tools), and the web console's npm
# packages (esbuild, playwright-core, …) from its lockfile.
deps: kube-tools console-deps
    scripts/install-deps.sh
    PYTHONPATH=.tools/py python3 -c 'import kubernetes_validate' 2>/dev/null || \
      scripts/pip-target.sh .tools/py kubernetes-validate
    scripts/install-nextest.sh || echo "deps: no cargo-nextest; suites run with cargo test" >&2

# The web console's npm packages, exactly as locked (gateway/console/package-lock.json); node and
# npm from Debian when the machine has none. Install scripts stay off: esbuild's binary comes
# as an npm package of its own.
console-deps:
    command -v npm >/dev/null || scripts/install-deps.sh nodejs npm
    cd gateway/console && (npm ls --all >/dev/null 2>&1 || npm ci --ignore-scripts --no-audit --no-fund)

# Rebuild the web console's checked-in assets (gateway/console/dist/) from its TypeScript
# sources; the `console_assets` suite fails when they drift. Commit the result.
console: console-deps
    cd gateway/console && node build.mjs

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

# Unit tests only: no services needed. cargo-nextest when installed (`./task deps`), else cargo test.
unit:
    if command -v cargo-nextest >/dev/null; then \
      cargo nextest run --workspace; \
    else \
      cargo test --workspace; \
    fi

# Without nextest, cargo test runs one binary at a time and RUST_TEST_THREADS=1 one test at a time,
# so service suites never overlap (nextest's `services` group, .config/nextest.toml).

# Every suite, including those that start real Postgres/Patroni/Redis/Sentinel/HAProxy/OpenSSH.
services: deps
    if command -v cargo-nextest >/dev/null; then \
      cargo nextest run --workspace --all-features --profile ci; \
    else \
      RUST_TEST_THREADS=1 cargo test --workspace --all-features --no-fail-fast; \
    fi

# Benchmarks (release build): relay throughput/latency and session setup against direct TCP and
# HAProxy, memory per idle session, operator render/reconcile cost. Prints ratios; never fails on
# timing.
bench: deps
    cargo build --release -p wardengate --bins
    WG_BIN_DIR=target/release cargo run --release -p wardengate-e2e --features services --bin wg-bench

# The README's test command: dependencies, lints, then every suite.
test: deps lint services

# Fuzz every parser that takes outside input (fuzz/, cargo-fuzz on nightly, both installed when
# missing), one target after another for FUZZ_SECONDS each (default 60); fails on a crash and
# names the input. Not part of `test`/CI: `./task fuzz [TARGET...]`.
fuzz *TARGETS:
    scripts/fuzz.sh {{TARGETS}}

# Build the Kubernetes tools from the Go modules in e2e/kube (etcd; kube-apiserver,
# kube-controller-manager, kube-scheduler and kubectl v1.37; kwok; helm; kstatus) into .tools/bin.
# Cached outside the clone per module hash: a warm run only links them.
kube-tools:
    scripts/build-kube-tools.sh

# A real Kubernetes control plane on loopback in the foreground (six kwok nodes in zones a/b/c).
# Prints `export KUBECONFIG=…` when ready; Ctrl-C stops everything.
kube: kube-tools
    cargo run --quiet -p wardengate-testkit --bin wg-kube
