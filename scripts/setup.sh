#!/usr/bin/env bash
# One-time (idempotent) set-up of everything the demo and the tests need on a fresh machine:
#   1. Debian packages: prometheus (+ promtool) and lua5.4, only when missing;
#   2. a Python virtualenv outside the clone with this project installed (editable) and its
#      dev extras, re-installed only when pyproject.toml or the clone's path changed;
#   3. kube-apiserver, kube-controller-manager, etcd, kubectl and helm built from the Go module
#      proxy (cached by version).
# Prints nothing but progress; safe to run many times.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cache="${LVM_CACHE_DIR:-$HOME/.cache/lvm-rollout}"
venv="${LVM_VENV:-$cache/venv}"
log() { printf '[setup] %s\n' "$*" >&2; }

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  log "installing Debian's prometheus package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps node-exporter & co. out; we start Prometheus ourselves.
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package enables a system service; our stack runs its own process with its own config.
  (systemctl disable --now prometheus >/dev/null 2>&1 || service prometheus stop >/dev/null 2>&1 || true)
fi

if ! command -v lua5.4 >/dev/null; then
  # The Argo CD health check and actions (tools/argocd/) are tested with a real Lua interpreter.
  log "installing Debian's lua5.4 package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends lua5.4 >/dev/null 2>&1 || {
    apt-get update -qq && apt-get install -y -qq --no-install-recommends lua5.4 >/dev/null; }
fi

stamp="$venv/.lvm-rollout-stamp"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16) $root"
if [[ ! -x "$venv/bin/python" ]]; then
  log "creating virtualenv $venv"
  python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  log "installing Python dependencies into $venv (torch and ray are large: minutes when cold)"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e "$root[dev]"
  printf '%s' "$want" > "$stamp"
fi

bash "$here/build-tools.sh"
log "ready: virtualenv $venv; tools $(dirname "$(bash "$here/build-tools.sh" --print | head -1)")"
