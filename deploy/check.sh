#!/usr/bin/env bash
# Offline checks of the Dockerfile and the Kubernetes manifests (no cluster, no Docker).
#
#   bash deploy/check.sh            # from the repository root (or from anywhere)
#   bash deploy/check.sh -k socket  # extra arguments go to pytest
#
# Needs python3 and kubectl (with its built-in kustomize). Installs the pinned Python
# packages from deploy/tests/requirements.txt if they are not already there.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
requirements=deploy/tests/requirements.txt

if ! command -v kubectl >/dev/null 2>&1; then
  echo "check.sh: kubectl not found (needed for 'kubectl kustomize')" >&2
  exit 1
fi

# Are exactly the pinned versions installed?
pins_ok() {
  python3 - "$requirements" <<'PY'
import re, sys
from importlib import metadata
ok = True
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, version = re.split(r"==", line, maxsplit=1)
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have != version:
        print(f"check.sh: {name}: want {version}, have {have}", file=sys.stderr)
        ok = False
sys.exit(0 if ok else 1)
PY
}

if ! pins_ok; then
  python3 -m pip install -q --disable-pip-version-check -r "$requirements"
  pins_ok
fi

# No .pytest_cache or __pycache__ left in the work tree.
export PYTHONDONTWRITEBYTECODE=1
exec python3 -m pytest -q -p no:cacheprovider deploy/tests "$@"
