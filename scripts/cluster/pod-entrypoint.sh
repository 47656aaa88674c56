#!/bin/sh
# The "image" of trainer and server pods in the cluster test tier (fakelet's images.json maps the
# operator's image names here): emulates the two volumes those pods mount, then runs the binary.
# fakelet (as root) starts every container in a private mount namespace, so these bind mounts are
# the pod's alone:
#   /artifacts  the artifact claim: $FLYWHEEL_TEST_ARTIFACTS, shared by every pod (the PVC)
#   /tmp        the pod's emptyDir scratch volume: a folder in the pod's fakelet directory
# Usage (from images.json): pod-entrypoint.sh BINARY [ARG...]
set -eu
binary="$1"
shift
if [ -z "${FLYWHEEL_TEST_ARTIFACTS:-}" ] || [ -z "${FAKELET_POD_DIR:-}" ]; then
  echo "pod-entrypoint: FLYWHEEL_TEST_ARTIFACTS and FAKELET_POD_DIR must be set (images.json env, fakelet)" >&2
  exit 2
fi
if ! mount --bind "$FLYWHEEL_TEST_ARTIFACTS" /artifacts; then
  echo "pod-entrypoint: failed to mount the artifact folder on /artifacts; run the tier as root (fakelet then gives each container a private mount namespace) with /artifacts present" >&2
  exit 2
fi
mkdir -p "$FAKELET_POD_DIR/scratch"
mount --bind "$FAKELET_POD_DIR/scratch" /tmp
exec "$binary" "$@"
