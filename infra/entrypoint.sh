#!/usr/bin/env bash
# Entrypoint of infra/Dockerfile.
#   docker run IMAGE train --config ...   -> mixgrpo train --config ...
#   docker run IMAGE bash | ray ... | python ...  -> that program (ray up and KubeRay start Ray this way)
#   no arguments, PUBLIC_KEY set (a RunPod pod created by `mixgrpo launch runpod`) -> serve SSH with that key,
#   as RunPod's own images do, so the launcher can ship and start the job.
set -euo pipefail
if [ "$#" -eq 0 ]; then
  if [ -n "${PUBLIC_KEY:-}" ]; then
    mkdir -p /root/.ssh && chmod 700 /root/.ssh
    printf '%s\n' "$PUBLIC_KEY" >> /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys
    ssh-keygen -A >/dev/null
    exec /usr/sbin/sshd -D -e
  fi
  exec mixgrpo --help
fi
if command -v "$1" >/dev/null 2>&1; then
  exec "$@"
fi
exec mixgrpo "$@"
