#!/usr/bin/env bash
# Runs the Python parity tests (interop/tests) with the pinned venv. Extra arguments go to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
"$here/setup.sh"

cd "$repo"
rc=0
"$here/.venv/bin/python" -m pytest interop/tests -q "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
  echo "run-tests: pytest collected no tests, which counts as a failure" >&2
fi
exit "$rc"
