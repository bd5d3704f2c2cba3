#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything, runs the C++ tests
# (ctest) and the Python tests (GPU lane + Triton-interpreter lane). Exits non-zero on any
# failure, including "no tests collected". Without a GPU it says so: GPU tests are skipped.
source "$(dirname "$0")/common.sh"
ensure_dependencies
build_project
LOGDIR=${FLASHKERNEL_TEST_LOGS:-$BUILD/test-logs}
mkdir -p "$LOGDIR"
status=0
PYTEST_PATHS=${FK_PYTEST_PATHS:-tests/python}

log "C++ tests (ctest)"
(cd "$BUILD" && ctest --output-on-failure -j "$JOBS") 2>&1 | tee "$LOGDIR/ctest.log" || status=1
cpp_skipped=$(grep -c '\*\*\*Skipped' "$LOGDIR/ctest.log" || true)

log "CMake package: install, then build and run a consumer with find_package(FlashKernel)"
{ cmake --install "$BUILD" --prefix "$BUILD/install" >/dev/null &&
  cmake -S tests/cmake_consumer -B "$BUILD/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$BUILD/install" >/dev/null &&
  cmake --build "$BUILD/consumer" >/dev/null && "$BUILD/consumer/consumer"; } 2>&1 | tee "$LOGDIR/consumer.log" \
  || { echo "CMake package consumer FAILED"; status=1; }

run_pytest() {  # name, then pytest arguments; "no tests ran" (exit 5) counts as a failure
  local name=$1; shift
  log "Python tests: $name"
  set +e
  "$PY" -m pytest -q -rs --junitxml="$LOGDIR/pytest-$name.xml" "$@" 2>&1 | tee "$LOGDIR/pytest-$name.log"
  local rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then echo "pytest ($name) exited with $rc"; status=1; fi
}
run_pytest gpu $PYTEST_PATHS
TRITON_INTERPRET=1 run_pytest triton-interpreter -m triton $PYTEST_PATHS

py_skipped=$("$PY" - "$LOGDIR"/pytest-*.xml <<'PYEOF'
import sys, xml.etree.ElementTree as ET
n = 0
for path in sys.argv[1:]:
    for suite in ET.parse(path).getroot().iter("testsuite"):
        n += int(suite.get("skipped", 0))
print(n)
PYEOF
)
log "summary"
if gpu_present; then
  echo "GPU present: $("$PY" -c 'import torch; print(torch.cuda.get_device_name())')"
  echo "skipped: $cpp_skipped C++ tests, $py_skipped Python tests (the interpreter lane skips non-Triton tests by design)"
else
  echo "NO GPU: GPU tests were SKIPPED (C++: $cpp_skipped skipped; Python: $py_skipped skipped)."
  echo "Only CPU tests, argument checks, CPU references and Triton twins under the interpreter ran here."
fi
[ "$status" -eq 0 ] && echo "ALL TESTS PASSED" || echo "SOME TESTS FAILED"
exit "$status"
