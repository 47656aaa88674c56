#!/bin/sh
# The "image" of trainer and server pods in the cluster test tier (fakelet's images.json maps the
# operator's image names here): emulates the two volumes those pods mount, then runs the binary.
# fakelet (as root) starts every container in a private mount namespace, so these bind mounts are
# the pod's alone:
#   /artifacts  the artifact claim: $FLYWHEEL_TEST_ARTIFACTS, shared by every pod (the PVC)
#   /tmp        the pod's emptyDir scratch volume: a folder in the pod's fakelet directory
# Every pod shares the node's IP (fakelet runs them as host processes), so a server pod whose
# port another pod still holds (the old replica of a rolling update, a server of a namespace
# being deleted) waits for it instead of failing to bind; on a real node each pod has its own IP.
# Until then fakelet's readiness probe reaches the holder, so the pod may turn Ready early.
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
for arg in "$@"; do
  case "$arg" in
  --listen=*)
    python3 - "${arg##*:}" <<'PY'
import socket, sys, time
port, waited = int(sys.argv[1]), False
while True:
    s = socket.socket()
    # As the server binds: a closed listener's TIME_WAIT connections do not hold the port.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", port))
        break
    except OSError:
        if not waited:
            print(f"pod-entrypoint: port {port} is held by another pod (all pods share the node IP); waiting", flush=True)
            waited = True
        time.sleep(0.2)
    finally:
        s.close()
PY
    ;;
  esac
done
exec "$binary" "$@"
