#!/usr/bin/env bash
# GPU check: from a clean build folder, builds for this GPU, runs every test (C++ and Python, GPU
# ones included), runs compute-sanitizer memcheck over the C++ GPU tests and racecheck/synccheck
# over the shared-memory kernels, and prints a summary table. Fails if anything fails, if any GPU
# test was skipped, or if a sanitizer reports an error.   Usage: scripts/gpu_check.sh [LOGDIR]
LOGDIR_ARG=${1:-gpu-check-logs}
export FLASHKERNEL_BUILD_DIR=${FLASHKERNEL_BUILD_DIR:-build-gpucheck}
source "$(dirname "$0")/common.sh"
set +e  # every step runs and is reported, even after a failure
PYTEST_PATHS=${FK_PYTEST_PATHS:-tests/python}
mkdir -p "$LOGDIR_ARG"; LOGDIR=$(cd "$LOGDIR_ARG" && pwd)
START=$(date +%s)
gpu_present || { echo "error: no CUDA GPU visible" >&2; exit 2; }
CC=$("$PY" -c "import torch; print(''.join(map(str, torch.cuda.get_device_capability())))")
export FLASHKERNEL_CUDA_ARCHS=${FLASHKERNEL_CUDA_ARCHS:-$([ "$CC" = 90 ] && echo 90a || echo "$CC")}
ARCHS=$FLASHKERNEL_CUDA_ARCHS
rm -rf "$BUILD"
declare -a NAMES RESULTS DETAILS
record() { NAMES+=("$1"); RESULTS+=("$2"); DETAILS+=("$3"); }

ensure_dependencies
t0=$(date +%s)
if build_project >"$LOGDIR/build.log" 2>&1; then record build PASS "archs=$ARCHS, $(( $(date +%s) - t0 ))s"
else tail -40 "$LOGDIR/build.log"; record build FAIL "see build.log"; fi

TESTS="$BUILD/tests/cpp/flashkernel_tests"
if [ -x "$TESTS" ]; then
  "$TESTS" --gtest_output=xml:"$LOGDIR/gtest.xml" >"$LOGDIR/gtest.log" 2>&1; rc=$?
  read -r total failed skipped < <("$PY" - "$LOGDIR/gtest.xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
print(r.get("tests"), int(r.get("failures", 0)) + int(r.get("errors", 0)), r.get("skipped", r.get("disabled", 0)))
PYEOF
)
  res=PASS; { [ "$rc" -ne 0 ] || [ "$failed" != 0 ] || [ "$skipped" != 0 ]; } && res=FAIL
  record "C++ tests" $res "$total tests, $failed failed, $skipped skipped"

  # memcheck: every GPU test (the argument tests do no CUDA work, harmless to include).
  timeout 900 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 "$TESTS" \
      --gtest_filter="${FK_MEMCHECK_FILTER:-*}" >"$LOGDIR/memcheck.log" 2>&1; rc=$?
  record "memcheck" "$([ $rc -eq 0 ] && echo PASS || echo FAIL)" "$(grep -E 'ERROR SUMMARY' "$LOGDIR/memcheck.log" | tail -1)"
  # racecheck/synccheck: kernels with shared memory, on their small test cases.
  # (racecheck is 10-100x slower than a plain run: one small case per shared-memory kernel).
  RACE_FILTER=${FK_RACECHECK_FILTER:-AttentionTest/*.UnequalLengthsCausalBottomRight:GeluLinearTest/*.TiledPath:GeluLinearTest/*.SmallMStreamingPath:ReduceTest/*.RowsMatchReferenceForEveryRowLength:KVCacheKernelTest/*.DecodeMatchesReference:RopeTest/*.TableMatchesReference}
  for tool in racecheck synccheck; do
    timeout 900 compute-sanitizer --tool $tool --error-exitcode 9 --print-limit 20 "$TESTS" --gtest_filter="$RACE_FILTER" \
        >"$LOGDIR/$tool.log" 2>&1; rc=$?
    record "$tool" "$([ $rc -eq 0 ] && echo PASS || echo FAIL)" "filter $RACE_FILTER; $(grep -E 'ERROR SUMMARY|HAZARD' "$LOGDIR/$tool.log" | tail -1)"
  done
else
  record "C++ tests" FAIL "not built"
fi

pytest_lane() {  # name, then pytest args
  local name=$1; shift
  "$PY" -m pytest -q -rs --junitxml="$LOGDIR/pytest-$name.xml" "$@" >"$LOGDIR/pytest-$name.log" 2>&1; local rc=$?
  read -r total failed skipped < <("$PY" - "$LOGDIR/pytest-$name.xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
t = f = s = 0
for suite in ET.parse(sys.argv[1]).getroot().iter("testsuite"):
    t += int(suite.get("tests", 0)); f += int(suite.get("failures", 0)) + int(suite.get("errors", 0)); s += int(suite.get("skipped", 0))
print(t, f, s)
PYEOF
)
  echo "$rc $total $failed $skipped"
}
read -r rc total failed skipped < <(pytest_lane gpu $PYTEST_PATHS)
res=PASS; { [ "$rc" -ne 0 ] || [ "$skipped" != 0 ]; } && res=FAIL
record "pytest (GPU)" $res "$total tests, $failed failed, $skipped skipped"
read -r rc total failed skipped < <(TRITON_INTERPRET=1 pytest_lane interp -m triton $PYTEST_PATHS)
record "pytest (Triton interpreter)" "$([ "$rc" -eq 0 ] && echo PASS || echo FAIL)" "$total tests, $failed failed, $skipped skipped (non-Triton tests deselected)"

echo
echo "GPU check on $("$PY" -c 'import torch; print(torch.cuda.get_device_name())') in $(( $(date +%s) - START ))s; logs in $LOGDIR"
printf '%-30s %-6s %s\n' step result details
printf '%-30s %-6s %s\n' ---- ------ -------
fail=0
for i in "${!NAMES[@]}"; do
  printf '%-30s %-6s %s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${DETAILS[$i]}"
  [ "${RESULTS[$i]}" = PASS ] || fail=1
done
[ $fail -eq 0 ] && echo "GPU CHECK PASSED" || echo "GPU CHECK FAILED"
exit $fail
