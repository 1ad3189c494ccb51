#!/usr/bin/env bash
# Build the Kubernetes control-plane binaries and CLIs the local stack needs (and kubeconform,
# which lints the rendered chart) from the Go module proxy (release tarballs cannot be
# downloaded on these machines).
#
# Each tool is cached outside the clone, keyed by version:
#   ${LVM_CACHE_DIR:-~/.cache/lvm-rollout}/bin/<component>-<version>/<binary>
# and built only when absent, so a warm run costs nothing. A cold build takes several
# minutes on two cores (kube-apiserver dominates).
#
# Usage: scripts/build-tools.sh            build whatever is missing
#        scripts/build-tools.sh --print    print the cached paths (one per line)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${LVM_CACHE_DIR:-$HOME/.cache/lvm-rollout}"
bin="$cache/bin"
kube_dir="$bin/kubernetes-$KUBERNETES_VERSION"
etcd_dir="$bin/etcd-$ETCD_VERSION"
helm_dir="$bin/helm-$HELM_VERSION"
# Only its clusterrole-aggregation controller runs (tests of the chart's aggregated roles).
kcm_dir="$bin/kube-controller-manager-$KUBERNETES_VERSION"
kubeconform_dir="$bin/kubeconform-$KUBECONFORM_VERSION"
seaweedfs_dir="$bin/seaweedfs-$SEAWEEDFS_VERSION"

if [[ "${1:-}" == "--print" ]]; then
  printf '%s\n' "$kube_dir/kube-apiserver" "$kube_dir/kubectl" "$etcd_dir/etcd" "$helm_dir/helm" \
    "$kcm_dir/kube-controller-manager" "$kubeconform_dir/kubeconform" "$seaweedfs_dir/weed"
  exit 0
fi

export CGO_ENABLED=0 GOFLAGS=-mod=mod
log() { printf '[build-tools] %s\n' "$*" >&2; }

# Builds into a temp dir and renames it into place, so an interrupted build never leaves a
# half-populated cache directory that later runs would trust.
build_into() {
  local dest="$1"; shift
  local tmp="$dest.partial.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  if ! "$@" "$tmp"; then
    rm -rf "$tmp"; log "FAILED building into $dest"; return 1
  fi
  rm -rf "$dest"; mv "$tmp" "$dest"
}

kube_ldflags() {
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local flags="-s -w"
  # Without these the server reports v0.0.0 and kubectl/Helm version checks break.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date -X $pkg.gitCommit=lvm-rollout-build"
  done
  printf '%s' "$flags"
}

build_kube() {
  local out="$1" ldflags; ldflags="$(kube_ldflags)"
  (cd "$root/tools/k8s" &&
    go build -trimpath -ldflags "$ldflags" -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver &&
    go build -trimpath -ldflags "$ldflags" -o "$out/kubectl" k8s.io/kubernetes/cmd/kubectl)
}

build_kcm() {
  local out="$1" ldflags; ldflags="$(kube_ldflags)"
  (cd "$root/tools/k8s" &&
    go build -trimpath -ldflags "$ldflags" -o "$out/kube-controller-manager" \
      k8s.io/kubernetes/cmd/kube-controller-manager)
}

build_etcd() {
  local out="$1"
  (cd "$root/tools/etcd" &&
    go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=lvm-rollout-build" \
      -o "$out/etcd" go.etcd.io/etcd/server/v3)
}

build_helm() {
  local out="$1"
  GOBIN="$out" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

build_kubeconform() {
  local out="$1"
  GOBIN="$out" go install -trimpath -ldflags "-s -w" \
    "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
}

build_seaweedfs() {
  local out="$1"
  (cd "$root/tools/seaweedfs" &&
    go build -trimpath -ldflags "-s -w" -o "$out/weed" github.com/seaweedfs/seaweedfs/weed)
}

[[ -x "$seaweedfs_dir/weed" ]] || {
  log "building SeaweedFS $SEAWEEDFS_VERSION (the local S3-compatible store; minutes cold)"
  build_into "$seaweedfs_dir" build_seaweedfs; }
[[ -x "$kubeconform_dir/kubeconform" ]] || {
  log "building kubeconform $KUBECONFORM_VERSION"; build_into "$kubeconform_dir" build_kubeconform; }
[[ -x "$etcd_dir/etcd" ]] || { log "building etcd $ETCD_VERSION"; build_into "$etcd_dir" build_etcd; }
[[ -x "$helm_dir/helm" ]] || { log "building helm $HELM_VERSION"; build_into "$helm_dir" build_helm; }
if [[ ! -x "$kube_dir/kube-apiserver" || ! -x "$kube_dir/kubectl" ]]; then
  log "building kube-apiserver and kubectl $KUBERNETES_VERSION (several minutes cold)"
  build_into "$kube_dir" build_kube
fi
if [[ ! -x "$kcm_dir/kube-controller-manager" ]]; then
  log "building kube-controller-manager $KUBERNETES_VERSION (minutes cold)"
  build_into "$kcm_dir" build_kcm
fi
log "tools ready under $bin"
