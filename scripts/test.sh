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

log "lint (ruff check, rules in pyproject.toml)"
"$PY" -m ruff check --no-cache . || { echo "ruff FAILED"; status=1; }

log "C++ tests (ctest)"
(cd "$BUILD" && ctest --output-on-failure -j "$JOBS") 2>&1 | tee "$LOGDIR/ctest.log" || status=1
cpp_skipped=$(grep -c '\*\*\*Skipped' "$LOGDIR/ctest.log" || true)

log "CMake package: install, then build and run a consumer with find_package(FlashKernel)"
{ cmake --install "$BUILD" --prefix "$BUILD/install" >/dev/null &&
  cmake -S tests/cmake_consumer -B "$BUILD/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$BUILD/install" >/dev/null &&
  cmake --build "$BUILD/consumer" >/dev/null && "$BUILD/consumer/consumer"; } 2>&1 | tee "$LOGDIR/consumer.log" \
  || { echo "CMake package consumer FAILED"; status=1; }

# The T4 (sm_75) build: the library compiles for it (the sm_80 kernels become traps the host never
# launches there; detail::require_compute_capability). Compile only: no sm_75 GPU runs it here.
log "library build for sm_75 (compile only)"
if { cmake -S . -B "$BUILD/sm75" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHKERNEL_CUDA_ARCHS=75 \
           -DFLASHKERNEL_BUILD_TESTS=OFF -DFLASHKERNEL_BUILD_TORCH=OFF -DFLASHKERNEL_BUILD_BENCH=OFF &&
     cmake --build "$BUILD/sm75" --target flashkernel -j "$JOBS"; } >"$LOGDIR/sm75.log" 2>&1; then
  echo "sm_75 library built"
else
  tail -30 "$LOGDIR/sm75.log"; echo "sm_75 build FAILED (log: $LOGDIR/sm75.log)"; status=1
fi

log "wheel: build, install into a fresh environment, import and check it from outside the checkout"
bash scripts/wheel_check.sh || { echo "wheel check FAILED"; status=1; }

run_pytest() {  # name, then pytest arguments; "no tests ran" (exit 5) counts as a failure
  local name=$1; shift
  log "Python tests: $name"
  set +e
  # Skips are counted in the summary, not listed (the lane's junit XML has each one's reason).
  "$PY" -m pytest -q --junitxml="$LOGDIR/pytest-$name.xml" "$@" 2>&1 | tee "$LOGDIR/pytest-$name.log"
  local rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then echo "pytest ($name) exited with $rc"; status=1; fi
}
run_pytest gpu $PYTEST_PATHS
TRITON_INTERPRET=1 run_pytest triton-interpreter -m triton $PYTEST_PATHS

skipped_in() {  # junit XML of one pytest lane -> its number of skipped tests
  [ -f "$1" ] || { echo "?"; return; }
  "$PY" -c 'import sys, xml.etree.ElementTree as ET
print(sum(int(s.get("skipped", 0)) for s in ET.parse(sys.argv[1]).getroot().iter("testsuite")))' "$1"
}
py_gpu_skipped=$(skipped_in "$LOGDIR/pytest-gpu.xml")
py_interp_skipped=$(skipped_in "$LOGDIR/pytest-triton-interpreter.xml")
py_skipped="Python GPU lane: $py_gpu_skipped skipped; interpreter lane: $py_interp_skipped skipped"
log "summary"
if gpu_present; then
  echo "GPU present: $("$PY" -c 'import torch; print(torch.cuda.get_device_name())')"
  echo "skipped: $cpp_skipped C++ tests; $py_skipped (the interpreter lane runs only the Triton tests, -m triton)"
else
  echo "NO GPU: GPU tests were SKIPPED (C++: $cpp_skipped skipped; $py_skipped)."
  echo "Only CPU tests, argument checks, CPU references and Triton twins under the interpreter ran here."
fi
[ "$status" -eq 0 ] && echo "ALL TESTS PASSED" || echo "SOME TESTS FAILED"
exit "$status"
