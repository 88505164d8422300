#!/usr/bin/env bash
# Run the unit tests once under every CPU kernel family that torch can pick on this machine.
#
#   bash tools/ci/unit_tests_per_cpu_capability.sh [PYTEST_ARGS...]      (PYTHON=... selects the interpreter)
#
# ATen dispatches its CPU kernels (reductions, soft-max, element-wise maths) by a capability: `default`, `avx2`
# or `avx512` on x86-64, the best one the CPU has unless ATEN_CPU_CAPABILITY says otherwise. Each family sums in
# its own order and fuses multiply-adds differently, so a float32 tolerance that holds for one can fail for
# another. Running the unit tests (not the end-to-end runs, which repeat the same kernels at length) under each
# capability this CPU supports makes such a tolerance fail on any machine, not only on one with another CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON=${PYTHON:-python}
UNIT_TESTS=(tests/models tests/engine tests/evaluation tests/datasets tests/utils)

capability() { "$PYTHON" -c 'import torch; print(torch.backends.cpu.get_cpu_capability().lower())'; }
best=$(unset ATEN_CPU_CAPABILITY; capability)
case "$best" in
  avx512*) capabilities=(default avx2 avx512) ;;
  avx2) capabilities=(default avx2) ;;
  *) capabilities=(default) ;;
esac
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
