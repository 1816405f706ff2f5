#!/bin/sh
# Builder stage of every service image: one virtualenv in /opt/venv with VoxGuard and the
# extras the service needs (e.g. "bgp" for mitigate). Shared so the four Dockerfiles stay small.
set -eu
extras="${1:-}"
python -m venv /opt/venv
/opt/venv/bin/pip install --no-cache-dir --upgrade pip
if [ -n "$extras" ]; then
  /opt/venv/bin/pip install --no-cache-dir "/src[$extras]"
else
  /opt/venv/bin/pip install --no-cache-dir /src
fi
/opt/venv/bin/voxguard --help >/dev/null
