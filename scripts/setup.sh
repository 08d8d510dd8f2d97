# Sourced by scripts/start and scripts/test: installs what the project needs, idempotently.
# Python packages into .venv (from requirements-dev.txt), Azurite from package-lock.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

lock_stamp=node_modules/.lock.sha256
lock_want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -x node_modules/.bin/azurite ] || [ "$(cat "$lock_stamp" 2>/dev/null)" != "$lock_want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_want" > "$lock_stamp"
fi
