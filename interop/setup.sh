#!/usr/bin/env bash
# Creates interop/.venv and installs the pinned requirements; skips pip when they are unchanged since the last
# install (the stamp holds their hash). Safe to run any number of times, from any directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
stamp="$venv/.requirements.sha256"
log="$venv/pip-install.log"
want="$(cat "$here/requirements.txt" "$here/requirements-nodeps.txt" | sha256sum | cut -d' ' -f1)"

if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup: creating $venv ($(python3 --version))"
  python3 -m venv "$venv"
fi
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "setup: $venv is up to date"
  exit 0
fi

echo "setup: installing interop/requirements.txt into $venv (log: $log)"
rm -f "$stamp"
pip_install() {
  if ! "$venv/bin/python" -m pip install --retries 0 --timeout 5 "$@" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "setup: pip install $* failed; full log in $log" >&2
    exit 1
  fi
}
: >"$log"
pip_install -r "$here/requirements.txt"
pip_install --no-deps -r "$here/requirements-nodeps.txt"
echo "$want" >"$stamp"
