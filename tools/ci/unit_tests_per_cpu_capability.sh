#!/usr/bin/env bash
# Run the unit tests under the CPU kernel families that torch can pick on this machine besides its own choice.
#
#   bash tools/ci/unit_tests_per_cpu_capability.sh [PYTEST_ARGS...]
#
# ATen dispatches its CPU kernels (reductions, soft-max, element-wise maths) by a capability: `default`, `avx2`
# or `avx512` on x86-64, the best one the CPU has unless ATEN_CPU_CAPABILITY says otherwise. Each family sums in
# its own order and fuses multiply-adds differently, so a float32 tolerance that holds for one can fail for
# another. `make test` runs the whole suite under the best capability, then this script runs the unit tests (not
# the end-to-end runs, which repeat the same kernels at length) under each lower one the CPU supports, so that
# such a tolerance fails on any machine, not only on one with another CPU.
#
#   PYTHON=...                       the interpreter (default: python)
#   CAPABILITIES="default avx2 ..."  the capabilities to run instead (e.g. all three, the best included)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON=${PYTHON:-python}
# every test but the end-to-end runs of the tools and of the downstream configs
UNIT_TESTS=(tests --ignore=tests/tools --ignore=tests/benchmarks)

capability() { "$PYTHON" -c 'import torch; print(torch.backends.cpu.get_cpu_capability().lower())'; }
best=$(unset ATEN_CPU_CAPABILITY; capability)
case "$best" in
  avx512*) lower=(default avx2) ;;
  avx2) lower=(default) ;;
  *) lower=() ;;
esac
# shellcheck disable=SC2206
capabilities=(${CAPABILITIES:-${lower[@]}})
if [ ${#capabilities[@]} = 0 ]; then
  echo "[cpu-capabilities] this CPU's best is $best: no other capability to run"
  exit 0
fi
echo "[cpu-capabilities] this CPU's best: $best; running the unit tests under: ${capabilities[*]}"
for requested in "${capabilities[@]}"; do
  chosen=$(ATEN_CPU_CAPABILITY=$requested capability)
  if [ "$chosen" != "$requested" ]; then
    echo "[cpu-capabilities] ATEN_CPU_CAPABILITY=$requested gave '$chosen': torch ignored the request" >&2
    exit 1
  fi
  echo "[cpu-capabilities] ATEN_CPU_CAPABILITY=$requested"
  ATEN_CPU_CAPABILITY=$requested "$PYTHON" -m pytest "${UNIT_TESTS[@]}" -q -p no:cacheprovider "$@"
done
