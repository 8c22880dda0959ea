#!/bin/sh
# The reliability suite at full counts: 8 processes x 500 commit attempts
# per store (lease storm 8 x 150, 1000 takeover races), 200 SIGKILLs per
# store, 1M mutated wire decodes, plus the security, corrupt-data and
# stale-result tests, and 300 unstaged rounds of PostgreSQL's commit /
# tombstone / vacuum / delete races (tests/test_store_races.py, whose
# staged races run too), and 200 examples of 60 steps per store and
# residency of the whole-stack model test (tests/test_stack_stateful.py).
# Figures print as "[name] key=value" lines.
#
#   scripts/stress.sh            (uses $PYTHON, else .venv/bin/python, else python3)
#
# PostgreSQL: as for the test suite (LASH_MACHINE_TEST_DSN, or the server
# binaries on PATH for a throwaway cluster).
set -eu
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
LASH_MACHINE_STRESS=full exec "$PYTHON" -m pytest -s -p no:cacheprovider \
    tests/test_reliability_*.py tests/test_store_races.py tests/test_stack_stateful.py "$@"
