#!/usr/bin/env bash
# Checks k8s/monitoring: the PrometheusRule's groups with `promtool check rules`, its unit
# tests with `promtool test rules`, and that the component renders with `kubectl kustomize`
# in an overlay over k8s/ (the way docs/OPERATIONS.md says to install it). Needs promtool (Debian: apt-get install prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=k8s/monitoring
# The overlay lives in a temporary directory next to k8s/ (kustomize wants relative paths, and
# an overlay may not sit inside a directory it includes).
tmp=$(mktemp -d "$PWD/.monitoring-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The rule file promtool reads is the PrometheusRule's `spec` (its last key), de-indented.
sed -n '/^spec:$/,$p' "$dir/prometheusrule.yaml" | tail -n +2 | sed 's/^  //' >"$tmp/apollo.rules.yaml"
cp "$dir"/tests/*.yaml "$tmp/"
promtool check rules "$tmp/apollo.rules.yaml"
(cd "$tmp" && promtool test rules ./*.test.yaml)

mkdir "$tmp/overlay"
cat >"$tmp/overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [ "../../k8s" ]
components: [ "../../$dir" ]
YAML
kubectl kustomize "$tmp/overlay" >"$tmp/rendered.yaml"
for want in "kind: PodMonitor" "kind: PrometheusRule" "grafana_dashboard: \"1\"" \
  "name: apollo-grafana-dashboard" "name: apollo-deviceprocess-gateway"; do
  grep -q "$want" "$tmp/rendered.yaml" || { echo "k8s/ with the $dir component lacks: $want"; exit 1; }
done
if kubectl kustomize k8s | grep -q "kind: PodMonitor"; then
  echo "the default install (k8s/) must not need the Prometheus Operator"; exit 1
fi
echo "monitoring ok"
