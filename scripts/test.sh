#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite: engine unit tests, the
# KVM tests, the lab tests and the collection's unit, sanity and end-to-end tests.
# Extra arguments go to pytest. FERRY_SLOW_TESTS=1 adds the opt-in slow tests.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
export PATH=$root/.venv/bin:$PATH
exec .venv/bin/python -m pytest "$@"
