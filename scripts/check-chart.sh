#!/usr/bin/env bash
# Checks the Helm chart (charts/flywheel): its CRDs are the generated ones, `helm lint --strict`
# passes for the default values and the main variants and fails for bad values, and every object it
# renders is valid against the Kubernetes 1.35 schemas (kubernetes-validate --strict). Needs .venv
# (scripts/setup-python.sh); installs helm and kubectl with scripts/install-k8s-tools.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
chart=charts/flywheel
kube_version=1.35.0
validator="$root/.venv/bin/kubernetes-validate"
helm="$root/.tools/k8s/bin/helm"

scripts/install-k8s-tools.sh
if [ ! -x "$validator" ]; then
  echo "check-chart: $validator is missing; run scripts/setup-python.sh" >&2
  exit 1
fi

failures=0
fail() {
  echo "check-chart: FAIL: $*" >&2
  failures=$((failures + 1))
}

# Helm installs CRDs from the chart's crds/ folder, so it must hold exactly what `flywheel crdgen`
# generated (crds/flywheel.yaml, itself checked for drift by the crdgen test).
if ! cmp -s crds/flywheel.yaml "$chart/crds/flywheel.yaml"; then
  fail "$chart/crds/flywheel.yaml differs from crds/flywheel.yaml; fix: cp crds/flywheel.yaml $chart/crds/flywheel.yaml"
fi

# Value sets the chart must render: name, then helm flags.
cases=(
  "default|"
  "s3-store|--set artifacts.root=s3://flywheel-models/prod --set artifacts.s3.secretName=flywheel-s3"
  "pvc-create|--set artifacts.pvc.create=true --set artifacts.pvc.storageClassName=nfs --set artifacts.pvc.size=50Gi"
  "service-monitor|--set metrics.serviceMonitor.enabled=true --set metrics.serviceMonitor.labels.release=prometheus"
  "watch-namespace|--set watchNamespace=ml --set artifacts.pvc.create=true --set replicaCount=2 --set statsIntervalSeconds=15"
  "single-no-election|--set leaderElection.enabled=false --set metrics.enabled=false --set serviceAccount.create=false --set serviceAccount.name=flywheel"
)
# Value sets `helm lint --strict` must reject: name, the value the error must point at, flags.
bad_cases=(
  "unknown-key|additional properties 'artifcats'|--set artifcats.root=file:///artifacts"
  "gs-root|/artifacts/root|--set artifacts.root=gs://bucket/models"
  "file-root-not-the-mount|/artifacts/root|--set artifacts.root=file:///data"
  "s3-without-secret|/artifacts/s3/secretName|--set artifacts.root=s3://flywheel-models"
  "file-without-claim|/artifacts/pvc/name|--set artifacts.pvc.name="
  "claim-for-s3|/artifacts/root|--set artifacts.root=s3://flywheel-models --set artifacts.s3.secretName=s3 --set artifacts.pvc.create=true"
  "replicas-without-election|/leaderElection/enabled|--set replicaCount=2 --set leaderElection.enabled=false"
  "monitor-without-metrics|/metrics/enabled|--set metrics.enabled=false --set metrics.serviceMonitor.enabled=true"
  "bad-pull-policy|/images/operator/pullPolicy|--set images.operator.pullPolicy=Sometimes"
  "trainer-pull-policy|additional properties 'pullPolicy'|--set images.trainer.pullPolicy=Always"
  "bad-log-format|/logFormat|--set logFormat=xml"
  "negative-ttl|/trialTtlSeconds|--set trialTtlSeconds=-1"
  "zero-stats-interval|/statsIntervalSeconds|--set statsIntervalSeconds=0"
  "bad-watch-namespace|/watchNamespace|--set watchNamespace=Not_A_Namespace"
)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for case in "${cases[@]}"; do
  name="${case%%|*}"
  read -r -a flags <<<"${case#*|}"
  if ! "$helm" lint --strict --quiet "$chart" "${flags[@]}" >"$tmp/lint.log" 2>&1; then
    fail "helm lint --strict ($name): $(cat "$tmp/lint.log")"
    continue
  fi
  rendered="$tmp/$name.yaml"
  if ! "$helm" template flywheel "$chart" --namespace flywheel-system --include-crds \
    "${flags[@]}" >"$rendered" 2>"$tmp/template.log"; then
    fail "helm template ($name): $(cat "$tmp/template.log")"
    continue
  fi
  if ! "$validator" --strict -k "$kube_version" "$rendered" >"$tmp/validate.log" 2>&1; then
    fail "kubernetes-validate ($name):"$'\n'"$(grep -v '^INFO' "$tmp/validate.log")"
    continue
  fi
  # kubernetes-validate only warns about kinds it has no schema for, which would also let a typo
  # in a built-in apiVersion through; the ServiceMonitor is the one custom kind the chart renders.
  unknown="$(grep "Couldn't find schema" "$tmp/validate.log" |
    grep -v 'kind ServiceMonitor with api version monitoring.coreos.com/v1 ' || true)"
  if [ -n "$unknown" ]; then
    fail "kubernetes-validate ($name) has no schema for:"$'\n'"$unknown"
  fi
  documents="$(grep -c '^kind:' "$rendered" || true)"
  checked="$(grep -c -e 'passed for resource' -e "Couldn't find schema for kind ServiceMonitor" "$tmp/validate.log" || true)"
  if [ "$documents" != "$checked" ]; then
    fail "kubernetes-validate ($name) checked $checked of $documents objects:"$'\n'"$(cat "$tmp/validate.log")"
  fi
  echo "check-chart: $name: lint ok, $documents objects valid for Kubernetes $kube_version"
done

rejected=0
for case in "${bad_cases[@]}"; do
  name="${case%%|*}"
  rest="${case#*|}"
  expected="${rest%%|*}"
  read -r -a flags <<<"${rest#*|}"
  if "$helm" lint --strict --quiet "$chart" "${flags[@]}" >"$tmp/lint.log" 2>&1; then
    fail "helm lint --strict accepted bad values ($name: ${flags[*]})"
  elif ! grep -qF -- "$expected" "$tmp/lint.log"; then
    fail "helm lint --strict rejected $name without naming $expected:"$'\n'"$(cat "$tmp/lint.log")"
  else
    rejected=$((rejected + 1))
  fi
done
echo "check-chart: $rejected of ${#bad_cases[@]} bad value sets rejected for the right reason"

if [ "$failures" -gt 0 ]; then
  echo "check-chart: $failures check(s) failed" >&2
  exit 1
fi
echo "check-chart: ok"
