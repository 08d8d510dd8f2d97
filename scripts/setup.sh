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
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt 2> >(grep -v '^WARNING: Location' >&2)
  echo "$want" > "$stamp"
fi

lock_stamp=node_modules/.lock.sha256
lock_want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -x node_modules/.bin/azurite ] || [ "$(cat "$lock_stamp" 2>/dev/null)" != "$lock_want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_want" > "$lock_stamp"
fi

# Offline Bicep checks in their own venv (checkov's pins differ from the app's). checkov 3.3.30
# pins pycep-parser 0.5.1, which cannot parse `extension`; 0.7.1 replaces it on purpose.
iac_stamp=.venv-iac/.stamp
iac_want="checkov==3.3.30 pycep-parser==0.7.1"
if [ "$(cat "$iac_stamp" 2>/dev/null)" != "$iac_want" ]; then
  "$PYTHON" -m venv .venv-iac
  .venv-iac/bin/python -m pip install --quiet --disable-pip-version-check checkov==3.3.30 2> >(grep -v '^WARNING: Location' >&2)
  .venv-iac/bin/python -m pip install --quiet --disable-pip-version-check --no-deps pycep-parser==0.7.1 2> >(grep -v '^WARNING: Location' >&2)
  echo "$iac_want" > "$iac_stamp"
fi
