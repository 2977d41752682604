#!/usr/bin/env bash
# Builds the Kubernetes tools the operator suite and `./task kube` need, from the Go modules under
# e2e/kube/, into .tools/bin/:
#   etcd                     e2e/kube/etcd     (go.etcd.io/etcd/server/v3 via etcdmain)
#   k8s + kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (links to one binary)
#                            e2e/kube/k8s      (k8s.io/kubernetes, staging modules replaced)
#   kwok                     e2e/kube/kwok     (simulated nodes and pods)
#   helm                     e2e/kube/helm
#   kstatus                  e2e/kube/kstatus  (sigs.k8s.io/cli-utils kstatus, as a CLI)
#
# Each module is built once per content: the binaries are cached outside the clone in
#   ${WG_KUBE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wardengate/kube-tools}/<module>-<hash>/
# keyed by a hash of the module's files, this script and the Go version, so a fresh clone on the
# same machine (CI) only links them. Go's own module and build caches stay at their defaults (in
# $HOME) and persist across clones too. Modules build with their committed go.sum (-mod=readonly).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN="$ROOT/.tools/bin"
CACHE="${WG_KUBE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wardengate/kube-tools}"
# The Kubernetes version stamped into the binaries; must match e2e/kube/k8s/go.mod.
K8S_VERSION=v1.37.2

say() { echo "kube-tools: $*" >&2; }

if ! command -v go >/dev/null 2>&1; then
  say "Go is not installed (need Go 1.26 or newer on PATH); cannot build the Kubernetes tools"
  exit 1
fi
GO_VERSION=$(go env GOVERSION)
mkdir -p "$BIN" "$CACHE"

# Hash of everything that decides a module's binaries.
module_hash() {
  local dir=$1
  {
    echo "$GO_VERSION $K8S_VERSION"
    sha256sum "$ROOT/scripts/build-kube-tools.sh" | cut -d' ' -f1
    (cd "$dir" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort |
      xargs sha256sum)
  } | sha256sum | cut -c1-16
}

# build MODULE PACKAGE OUTPUT [LDFLAGS]: builds into the cache unless already there; echoes the
# cache directory.
build() {
  local module=$1 pkg=$2 out=$3 ldflags=${4:-}
  local dir="$ROOT/e2e/kube/$module"
  local key
  key="$module-$(module_hash "$dir")"
  local dest="$CACHE/$key"
  if [ -f "$dest/.complete" ] && [ -x "$dest/$out" ]; then
    say "$module: cached ($dest)"
    echo "$dest"
    return
  fi
  say "$module: building $pkg (cold builds take minutes; Kubernetes takes longest) ..."
  local start=$SECONDS
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp"
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
    go build -ldflags "-s -w $ldflags" -o "$dest.tmp/$out" "$pkg") >&2
  touch "$dest.tmp/.complete"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  say "$module: built in $((SECONDS - start)) s"
  echo "$dest"
}

# link DIR NAME [TARGET]: .tools/bin/NAME -> DIR/TARGET
link() { ln -sfn "$1/${3:-$2}" "$BIN/$2"; }

total=$SECONDS
d=$(build etcd . etcd)
link "$d" etcd

LD=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LD="$LD -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=37 -X $p.gitTreeState=clean"
done
d=$(build k8s . k8s "$LD")
link "$d" k8s
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do link "$d" "$c" k8s; done

d=$(build kwok sigs.k8s.io/kwok/cmd/kwok kwok)
link "$d" kwok

d=$(build helm helm.sh/helm/v3/cmd/helm helm)
link "$d" helm

d=$(build kstatus . kstatus)
link "$d" kstatus

say "ready in $((SECONDS - total)) s: $("$BIN/kubectl" version --client 2>/dev/null | head -n1), etcd $("$BIN/etcd" --version 2>/dev/null | head -n1 | awk '{print $3}')"
