#!/usr/bin/env bash
# Builds the Kubernetes server binaries, kubectl, helm, CoreDNS and kube-network-policies (the
# NetworkPolicy enforcer of tests/k8s/network_policies.py) from the Go module proxy, once per
# version, into a cache outside the repository ($ML_K8S_CACHE, default ~/.cache/mlsteps/k8s).
# No registry ships Kubernetes' server binaries, and k8s.io/kubernetes' go.mod points its staging
# modules at local folders, so a small wrapper module requires every one at the matching v0.X.Y.
#   tests/k8s/build_binaries.sh            prints the bin directory (building what is missing)
#   ML_K8S_NO_BUILD=1 tests/k8s/build_binaries.sh   the same, but fails (exit 4) instead of building
set -euo pipefail
K8S_VERSION=${ML_K8S_VERSION:-v1.35.4}
HELM_VERSION=${ML_HELM_VERSION:-v3.22.0}
COREDNS_VERSION=${ML_COREDNS_VERSION:-v1.15.0}
NETPOL_VERSION=${ML_NETPOL_VERSION:-v0.8.0}
NETPOL_STAMP="$NETPOL_VERSION+xt-nfqueue"
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${ML_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlsteps/k8s}
BIN="$CACHE/kubernetes-$K8S_VERSION-helm-$HELM_VERSION/bin"
SERVER=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
# A binary counts only when it reports the pinned version (helm checks the chart's kubeVersion
# against what the API server reports, so the version must be stamped in at build time).
stamped() {  # stamped <name>  (output captured first: grep -q closing the pipe early trips pipefail)
  local out
  case "$1" in
    kubectl) out=$("$BIN/kubectl" version --client 2>/dev/null) && grep -qx "Client Version: $K8S_VERSION" <<<"$out" ;;
    helm) out=$("$BIN/helm" version --short 2>/dev/null) && grep -q "^${HELM_VERSION}" <<<"$out" ;;
    coredns) out=$("$BIN/coredns" -version 2>/dev/null) && grep -qx "CoreDNS-${COREDNS_VERSION#v}" <<<"$out" \
      && out=$("$BIN/coredns" -plugins 2>/dev/null) && grep -qx "bind" <<<"$out" ;;
    # it prints no version: the build writes the one it built beside it
    kube-network-policies) [ "$(cat "$BIN/$1.version" 2>/dev/null)" = "$NETPOL_STAMP" ] ;;
    *) out=$("$BIN/$1" --version 2>/dev/null) && grep -qx "Kubernetes $K8S_VERSION" <<<"$out" ;;
  esac
}
# One build at a time: .ci/run starts one in the background, and make test-k8s's own call then
# waits here for it and finds everything built.
mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock 9
missing=()
for name in "${SERVER[@]}" helm coredns kube-network-policies; do { [ -x "$BIN/$name" ] && stamped "$name"; } || missing+=("$name"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$BIN"; exit 0; fi
if [ -n "${ML_K8S_NO_BUILD:-}" ]; then
  echo "ERROR: the Kubernetes binaries are not built yet (missing ${missing[*]}): run make test-k8s or $0" >&2
  exit 4
fi
command -v go >/dev/null || { echo "ERROR: go is not on PATH: it builds the Kubernetes binaries" >&2; exit 3; }
mkdir -p "$BIN"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
staging_version="v0.${K8S_VERSION#v1.}"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
K8S_LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
build() {  # build <module dir> <output dir> <ldflags> <package>...
  (cd "$1" && go build -trimpath -ldflags "$3" -o "$2/" "${@:4}")
}
if printf '%s\n' "${missing[@]}" | grep -qv '^helm$'; then
  mkdir -p "$work/k8s" && cd "$work/k8s"
  go mod init mlsteps.local/k8sbuild >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    grep -oE '^\s*k8s.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' | while read -r mod; do
      echo "replace $mod => $mod $staging_version"
    done
  } >> go.mod
  printf 'package main\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver/app"\nfunc main() {}\n' > tools.go
  go mod tidy >/dev/null 2>&1 || true
  for name in "${SERVER[@]}"; do
    printf '%s\n' "${missing[@]}" | grep -qx "$name" || continue
    echo "building $name $K8S_VERSION (minutes on a cold cache)" >&2
    pkg=k8s.io/kubernetes/cmd/$name
    build "$work/k8s" "$BIN" "$K8S_LDFLAGS" "$pkg"
  done
fi
if printf '%s\n' "${missing[@]}" | grep -qx helm; then
  echo "building helm $HELM_VERSION" >&2
  mkdir -p "$work/helm" && cd "$work/helm"
  go mod init mlsteps.local/helmbuild >/dev/null 2>&1
  echo "require helm.sh/helm/v3 $HELM_VERSION" >> go.mod
  printf 'package main\nimport _ "helm.sh/helm/v3/pkg/action"\nfunc main() {}\n' > tools.go
  go mod tidy >/dev/null 2>&1 || true
  # As helm's Makefile does: the Kubernetes version `helm template` and `helm lint` assume is the
  # one of the client-go it is built with (else 1.20, below the chart's kubeVersion).
  client_go=$(go list -f '{{.Version}}' -m k8s.io/client-go)
  client_minor=$(echo "$client_go" | cut -d. -f2)
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    HELM_LDFLAGS+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$client_minor"
  done
  build "$work/helm" "$BIN" "$HELM_LDFLAGS" helm.sh/helm/v3/cmd/helm
fi
if printf '%s\n' "${missing[@]}" | grep -qx coredns; then
  # Cluster DNS for the pods (Services by name, as the dask-kubernetes operator's workers find their
  # scheduler): only the plugins the test cluster's Corefile uses, not CoreDNS's cloud back-ends.
  echo "building coredns $COREDNS_VERSION" >&2
  mkdir -p "$work/coredns" && cd "$work/coredns"
  go mod init mlsteps.local/coredns >/dev/null 2>&1
  echo "require github.com/coredns/coredns $COREDNS_VERSION" >> go.mod
  cat > main.go <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

// In CoreDNS's own order (plugin.cfg): the order of this list is the order a query goes through.
func init() { dnsserver.Directives = []string{"bind", "ready", "errors", "kubernetes"} }

func main() { coremain.Run() }
GO
  go mod tidy >/dev/null 2>&1 || true
  (cd "$work/coredns" && go build -trimpath -ldflags "-s -w" -o "$BIN/coredns" .)
fi
if printf '%s\n' "${missing[@]}" | grep -qx kube-network-policies; then
  # Upstream's source with one change: its queue verdict becomes iptables' NFQUEUE target through
  # nft_compat (kube_network_policies/xt_nfqueue.go), as this machine's kernel has no nft_queue.
  echo "building kube-network-policies $NETPOL_VERSION" >&2
  source_dir=$(go mod download -json "sigs.k8s.io/kube-network-policies@$NETPOL_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  cp -r "$source_dir" "$work/netpol" && chmod -R u+w "$work/netpol"
  cp "$HERE/kube_network_policies/xt_nfqueue.go" "$work/netpol/pkg/networkpolicy/"
  python3 - "$work/netpol/pkg/networkpolicy/controller.go" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
queue = """	queue := &expr.Queue{Num: uint16(c.config.QueueID)}
	if c.config.FailOpen {
		queue.Flag = expr.QueueFlagBypass
	}
"""
if text.count(queue) != 2:
    sys.exit(f"kube-network-policies changed: {path} no longer builds its two queue verdicts as expected")
open(path, "w").write(text.replace(queue, "\tqueue := xtNFQueue(uint16(c.config.QueueID), c.config.FailOpen)\n"))
PY
  (cd "$work/netpol" && go build -trimpath -ldflags "-s -w" -o "$BIN/kube-network-policies" ./cmd)
  echo "$NETPOL_STAMP" > "$BIN/kube-network-policies.version"
fi
echo "$BIN"
