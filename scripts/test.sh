#!/usr/bin/env bash
# Run the whole test suite, as root:   ./scripts/test.sh [pytest args]
# Sets up the machine (scripts/setup.sh, scripts/setup-stock-kernels.sh),
# then runs pytest from the repo root
# in the project venv (tests/ by default). Exits with pytest's status, except
# that "no tests collected/selected" (pytest's 5) is a failure: exit 1.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
bash "$REPO/scripts/setup.sh"
# The stock-kernel tier (tests/stock_kernel): QEMU and Debian's 6.1 and 6.12
# kernels, unpacked once into /var/cache/connscope. Set up here, it must run:
# a guest that cannot boot fails the tier instead of skipping it.
bash "$REPO/scripts/setup-stock-kernels.sh"
export CSTEST_REQUIRE_STOCK_KERNELS=1
cd "$REPO"
(($#)) || set -- tests/
rc=0
"$REPO/.venv/bin/python" -m pytest -ra -p no:cacheprovider "$@" || rc=$?
if ((rc == 5)); then
    echo "connscope test: pytest ran no tests (exit 5: none collected or all deselected); failing" >&2
    exit 1
fi
exit "$rc"
