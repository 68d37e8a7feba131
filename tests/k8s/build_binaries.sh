#!/usr/bin/env bash
# Builds the Kubernetes server binaries, kubectl and helm from the Go module proxy, once per
# version, into a cache outside the repository ($ML_K8S_CACHE, default ~/.cache/mlsteps/k8s).
# No registry ships Kubernetes' server binaries, and k8s.io/kubernetes' go.mod points its staging
# modules at local folders, so a small wrapper module requires every one at the matching v0.X.Y.
#   tests/k8s/build_binaries.sh            prints the bin directory (building what is missing)
set -euo pipefail
K8S_VERSION=${ML_K8S_VERSION:-v1.35.4}
HELM_VERSION=${ML_HELM_VERSION:-v3.22.0}
CACHE=${ML_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlsteps/k8s}
BIN="$CACHE/kubernetes-$K8S_VERSION-helm-$HELM_VERSION/bin"
SERVER=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
missing=()
for name in "${SERVER[@]}" helm; do [ -x "$BIN/$name" ] || missing+=("$name"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "ERROR: go is not on PATH: it builds the Kubernetes binaries" >&2; exit 3; }
mkdir -p "$BIN"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
staging_version="v0.${K8S_VERSION#v1.}"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
build() {  # build <module dir> <output dir> <package>...
  (cd "$1" && go build -trimpath -ldflags "-s -w" -o "$2/" "${@:3}")
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
    [ -x "$BIN/$name" ] && continue
    echo "building $name $K8S_VERSION (minutes on a cold cache)" >&2
    pkg=k8s.io/kubernetes/cmd/$name
    build "$work/k8s" "$BIN" "$pkg"
  done
fi
if [ ! -x "$BIN/helm" ]; then
  echo "building helm $HELM_VERSION" >&2
  mkdir -p "$work/helm" && cd "$work/helm"
  go mod init mlsteps.local/helmbuild >/dev/null 2>&1
  echo "require helm.sh/helm/v3 $HELM_VERSION" >> go.mod
  printf 'package main\nimport _ "helm.sh/helm/v3/pkg/action"\nfunc main() {}\n' > tools.go
  go mod tidy >/dev/null 2>&1 || true
  build "$work/helm" "$BIN" helm.sh/helm/v3/cmd/helm
fi
echo "$BIN"
