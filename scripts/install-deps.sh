#!/usr/bin/env bash
# Installs the Debian packages the service test suites drive, when any is missing; with arguments,
# those packages instead (e.g. `scripts/install-deps.sh python3-pip`).
# Non-interactive; uses sudo when not root. Prints what it installs; silent when nothing is missing.
set -euo pipefail

PACKAGES=(postgresql redis-server redis-sentinel patroni etcd-server etcd-client haproxy pgbouncer
          openssh-server openssh-client prometheus chromium)
[ $# -gt 0 ] && PACKAGES=("$@")

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "install-deps: apt-get not found; install these packages by hand: ${missing[*]}" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}" >&2
# Never let package scripts start services on their default ports during install.
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
