#!/usr/bin/env bash
# Which generated manifests fit the cluster that kubectl talks to (used by `make install`,
# `make deploy` and scripts/demo-kind.sh; README "Install").
#
#   scripts/k8s-variant.sh crds        the CRD directory: k8s/crds, or k8s-pre-1.<N>/crds
#   scripts/k8s-variant.sh kustomize   the kustomization: k8s, or k8s-pre-1.<N>
#   scripts/k8s-variant.sh minor       the server's Kubernetes minor version
#
# apollo-crdgen (`make manifests`) writes k8s-pre-1.<N>/ when a generated CRD uses a field
# that servers older than 1.<N> lack (selectableFields: on by default from 1.31); such a
# server gets that variant, every other server k8s/. Paths are printed absolute.
#
# Environment: KUBECTL (default kubectl; words are split, e.g. "kubectl --kubeconfig f"),
# K8S_MINOR (use this minor instead of asking the server).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
read -r -a KUBECTL_CMD <<<"${KUBECTL:-kubectl}"

die() {
  printf 'k8s-variant: %s\n' "$*" >&2
  exit 1
}

server_minor() {
  if [ -n "${K8S_MINOR:-}" ]; then
    printf '%s' "${K8S_MINOR%%[!0-9]*}"
    return
  fi
  local json minor
  # `kubectl version -o json` prints the client's version first, the server's last; a
  # managed cluster may say "29+".
  json="$("${KUBECTL_CMD[@]}" version -o json 2>/dev/null)" ||
    die "cannot read the server version (${KUBECTL_CMD[*]} version -o json failed): is the cluster reachable?"
  minor="$(printf '%s\n' "$json" | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | tail -n 1)"
  [ -n "$minor" ] || die "no server minor version in the output of ${KUBECTL_CMD[*]} version -o json"
  printf '%s' "$minor"
}

# The variant directory for `minor`: the k8s-pre-1.<N> with the smallest N above it, else k8s.
variant_dir() {
  local minor="$1" best="" best_n=0 d n
  for d in "$ROOT"/k8s-pre-1.*; do
    [ -d "$d" ] || continue
    n="${d##*-pre-1.}"
    case "$n" in '' | *[!0-9]*) continue ;; esac
    if [ "$minor" -lt "$n" ] && { [ -z "$best" ] || [ "$n" -lt "$best_n" ]; }; then
      best="$d"
      best_n="$n"
    fi
  done
  printf '%s' "${best:-$ROOT/k8s}"
}

case "${1:-}" in
  minor) server_minor ;;
  crds)
    m="$(server_minor)"
    printf '%s/crds\n' "$(variant_dir "$m")"
    ;;
  kustomize)
    m="$(server_minor)"
    printf '%s\n' "$(variant_dir "$m")"
    ;;
  *) die "usage: scripts/k8s-variant.sh crds|kustomize|minor" ;;
esac
