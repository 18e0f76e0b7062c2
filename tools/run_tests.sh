#!/usr/bin/env bash
# Install (idempotent, see tools/install.sh --tests) and run the test suite.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh tests/test_compat.py -x`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/tools/install.sh" --tests
cd "$REPO"
# shellcheck disable=SC1091
. .venv/bin/activate
exec python -m pytest "$@"
