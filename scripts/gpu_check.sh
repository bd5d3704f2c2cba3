#!/usr/bin/env bash
# GPU check: from a clean build folder, builds for this GPU, runs every test (C++ and Python, GPU
# ones included), runs compute-sanitizer memcheck and initcheck over the C++ GPU tests,
# racecheck/synccheck over the shared-memory kernels, memcheck over a representative subset of the
# Python tests (each op through its torch op, the GPT-2 engine, PagedKVCache; FK_PY_MEMCHECK=0
# skips it), the T4 (sm_75) and Ada (99 KiB) paths from PTX builds under FLASHKERNEL_FORCE_ARCH
# (FK_OLD_ARCHS=0 skips them), and prints a summary table. FK_SANITIZERS=0 skips the C++
# sanitizer chain and FK_INTERP=0 the Triton-interpreter lane (CPU only, also run by CI): with
# FK_OLD_ARCHS=0 and FK_PY_MEMCHECK=0 too, the call is build + C++ tests + the Python GPU lane, so
# the whole check can be split over two device calls (the lanes compete for the same CPU cores). Fails if anything fails, if any GPU test was skipped, or if a sanitizer reports an
# error.   Usage: scripts/gpu_check.sh [LOGDIR]
#
# Order: build, then the plain C++ test run; then four independent lanes at once: the C++
# sanitizer chain (memcheck, initcheck, racecheck, synccheck), the Python memcheck lane and the
# Triton-interpreter lane (CPU only) in the background, the Python GPU lane in the foreground. Each
# step's wall time is in the summary.
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
# A clean build unless the caller has just built this very tree there (FK_KEEP_BUILD=1, e.g. after
# scripts/bench.sh in the same call): a build from scratch is what CI and users get.
[ "${FK_KEEP_BUILD:-0}" = 1 ] || rm -rf "$BUILD"
rm -f "$LOGDIR"/*.result "$LOGDIR"/pytest-gpu-*.counts

# A step's outcome goes to $LOGDIR/<id>.result as "RESULT<tab>details (Ns)": steps that run in the
# background cannot set this shell's variables. The summary reads the files in STEPS order.
declare -a STEPS=()
step() { STEPS+=("$1|$2"); }  # id, name shown in the summary
step build "build"
[ "${FK_GTEST:-1}" = 1 ] && step gtest "C++ tests"
# FK_SANITIZERS: 1 (all four), 0 (none) or races (racecheck and synccheck only); FK_OLD_ARCHS: 1
# (both lanes), 0, 75 or 86; FK_GTEST=0 skips the plain C++ run (for a call that completes an
# earlier one's lanes).
SANITIZERS=${FK_SANITIZERS:-1} OLD_ARCHS=${FK_OLD_ARCHS:-1}
[ "$SANITIZERS" = 1 ] && { step memcheck "memcheck"; step initcheck "initcheck"; }
[ "$SANITIZERS" = 1 ] || [ "$SANITIZERS" = races ] && { step racecheck "racecheck"; step synccheck "synccheck"; }
step pytest-gpu "pytest (GPU)"
[ "${FK_INTERP:-1}" = 1 ] && step pytest-interp "pytest (Triton interpreter)"
case "$OLD_ARCHS" in 1|75) step arch75 "forced sm_75 (compute_75 PTX)" ;; esac
case "$OLD_ARCHS" in 1|86) step arch86 "forced sm_86 (compute_80, 99 KiB)" ;; esac
# The Python memcheck lane checks the library's kernels only (--kernel-name kns=flashkernel):
# instrumenting every kernel module PyTorch loads took more than 300 s before the first test ended
# on an H200; with the filter two tests took 14 s on an H100.
[ "${FK_PY_MEMCHECK:-1}" = 1 ] && step memcheck-py "memcheck (Python subset)"
finish() {  # id, PASS/FAIL, details, start time (seconds)
  printf '%s\t%s (%ss)\n' "$2" "$3" "$(( $(date +%s) - $4 ))" >"$LOGDIR/$1.result"
  # Also on stdout as it happens: a run cut short by a time limit still shows the steps it finished.
  printf '=== step %s: %s' "$1" "$(cat "$LOGDIR/$1.result")"; echo
}
pass_if() { [ "$1" -eq 0 ] && echo PASS || echo FAIL; }  # exit status -> PASS/FAIL

ensure_dependencies
t0=$(date +%s)
if build_project >"$LOGDIR/build.log" 2>&1; then finish build PASS "archs=$ARCHS" "$t0"
else tail -40 "$LOGDIR/build.log"; finish build FAIL "see build.log" "$t0"; fi

TESTS="$BUILD/tests/cpp/flashkernel_tests"

# compute-sanitizer over the C++ tests, one tool after the other (they share the GPU with the
# Python lane, not with each other).
sanitizer_chain() {
  local t0 rc
  if [ "$SANITIZERS" = 1 ]; then
  # memcheck: every GPU test (the argument tests do no CUDA work, harmless to include).
  t0=$(date +%s)
  # API errors are not memory errors: tests that provoke out-of-memory or bad launches on purpose
  # (ModelsGpt2EngineSafety, CudaCheck) would count as failures; every API call's status is
  # checked by the library itself.
  timeout 900 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 --print-limit 20 "$TESTS" \
      --gtest_filter="${FK_MEMCHECK_FILTER:-*}" >"$LOGDIR/memcheck.log" 2>&1; rc=$?
  finish memcheck "$(pass_if $rc)" "$(grep -E 'ERROR SUMMARY' "$LOGDIR/memcheck.log" | tail -1)" "$t0"
  # initcheck: reads of device memory nothing wrote (e.g. a kernel reading unwritten cache slots
  # or padding), over every GPU test but the whole-engine ones (ModelsGpt2Engine*, ModelsGpt2Persistent*: 107 s for one generate under
  # initcheck; see DEVELOPMENT_LOG.md, "Hardening", for what it reported there).
  t0=$(date +%s)
  timeout 900 compute-sanitizer --tool initcheck --report-api-errors no --error-exitcode 9 --print-limit 20 "$TESTS" \
      --gtest_filter="${FK_INITCHECK_FILTER:-*-ModelsGpt2Engine*:ModelsGpt2Persistent*}" >"$LOGDIR/initcheck.log" 2>&1; rc=$?
  finish initcheck "$(pass_if $rc)" "$(grep -E 'ERROR SUMMARY' "$LOGDIR/initcheck.log" | tail -1)" "$t0"
  fi
  # racecheck/synccheck: kernels with shared memory, on their small test cases (racecheck is
  # 10-100x slower than a plain run). One typed instance where both run one kernel template with
  # the dtype as its only difference (gelu_linear: /0 = fp16; paged decode: /0 = fp16); both where
  # the code differs by dtype: reduce and rope (fp32 takes other vector widths: /0 = fp32,
  # /1 = fp16) and attention (kernel paths still changing). Also the block reductions of
  # add_layernorm and the full reduction, and the GPT-2 engine's token selection on its own (a whole
  # generate under racecheck would not fit this script's budget).
  local filter=${FK_RACECHECK_FILTER:-AttentionTest/*.UnequalLengthsCausalBottomRight:GeluLinearTest/0.TiledPath:GeluLinearTest/0.SmallMStreamingPath:ReduceTest/0.RowsMatchReferenceForEveryRowLength:ReduceTest/1.RowsMatchReferenceForEveryRowLength:ReduceTest/0.FullMatchesReferenceOnOddSizes:ReduceTest/1.FullMatchesReferenceOnOddSizes:KVCacheKernelTest/0.DecodeMatchesReference:RopeTest/0.TableMatchesReference:RopeTest/1.TableMatchesReference:AddLayerNormTest/*.MatchesReference:ModelsGpt2TokenSelection.*}
  local tool
  for tool in racecheck synccheck; do
    t0=$(date +%s)
    timeout 900 compute-sanitizer --tool $tool --error-exitcode 9 --print-limit 20 "$TESTS" \
        --gtest_filter="$filter" >"$LOGDIR/$tool.log" 2>&1; rc=$?
    finish $tool "$(pass_if $rc)" "filter $filter; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|HAZARD' "$LOGDIR/$tool.log" | tail -1)" "$t0"
  done
}

# One pytest lane: name, then pytest arguments. Prints "rc total failed skipped".
pytest_lane() {
  local name=$1; shift
  # LANE_PREFIX (a sanitizer command line) and FK_PYTEST_EXTRA (more pytest flags, e.g. -v, so a
  # lane cut off by a time limit still shows which tests passed and failed) are split on purpose.
  # shellcheck disable=SC2086
  ${LANE_PREFIX:-} "$PY" -m pytest -q -rfEs --durations=30 -p no:cacheprovider ${FK_PYTEST_EXTRA:-} --basetemp="$BUILD/pytest-tmp-$name" \
      --junitxml="$LOGDIR/pytest-$name.xml" "$@" >"$LOGDIR/pytest-$name.log" 2>&1; local rc=$?
  read -r total failed skipped < <("$PY" - "$LOGDIR/pytest-$name.xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
t = f = s = 0
try:
    suites = list(ET.parse(sys.argv[1]).getroot().iter("testsuite"))
except (OSError, ET.ParseError):  # no report (the run crashed): counted as a failure below
    suites = []
for suite in suites:
    t += int(suite.get("tests", 0)); f += int(suite.get("failures", 0)) + int(suite.get("errors", 0)); s += int(suite.get("skipped", 0))
print(t, f, s)
PYEOF
)
  echo "$rc $total $failed $skipped"
}

interpreter_lane() {
  local t0 rc total failed skipped
  t0=$(date +%s)
  read -r rc total failed skipped < <(TRITON_INTERPRET=1 pytest_lane interp -m triton $PYTEST_PATHS)
  finish pytest-interp "$(pass_if "$rc")" \
      "$total tests, $failed failed, $skipped skipped (non-Triton tests deselected)" "$t0"
}

# memcheck over the Python paths: each op through its torch op, the engine and PagedKVCache, on a
# small representative subset (memcheck slows every launch), checking the kernels whose names hold
# "flashkernel" (ours; PyTorch's and HF's run unchecked). PyTorch's caching allocator would hide an
# overrun inside a cached block, so it is switched off for this lane. The engine enters through a
# teacher-forced forward (one HF forward to compare with) and the threads test (generate): HF's own
# 128-token greedy generate, thousands of uncached allocations under the sanitizer, did not finish
# its first case in 420 s on an H100.
PY_MEMCHECK_TESTS=${FK_PY_MEMCHECK_TESTS:-"tests/python/test_models_gpt2.py::test_teacher_forced_logits_match_hf[fp16]
  tests/python/test_kv_cache.py::test_decode_mixed_length_batch tests/python/test_kv_cache.py::test_append_from_misaligned_views
  tests/python/test_kv_cache.py::test_append_op_skips_and_reports_out_of_range_slots
  tests/python/test_kv_cache.py::test_gather_op_reports_out_of_range_pages_and_never_reads_them
  tests/python/test_kv_cache.py::test_decode_op_reports_out_of_range_page_table_and_seq_lens
  tests/python/test_models_gpt2_safety.py::test_threads_sharing_one_engine_get_their_own_results
  tests/python/test_attention.py::test_cuda_gqa tests/python/test_gelu_linear.py::test_gelu_linear_around_the_small_m_switch
  tests/python/test_rope.py::test_rope_writes_every_element tests/python/test_layernorm.py::test_add_layernorm_optional_inputs
  tests/python/test_reduce.py::test_misaligned_views tests/python/test_vector_add.py::test_vector_add_multidim_and_misaligned"}
python_memcheck_lane() {
  local t0 rc total failed skipped san
  t0=$(date +%s)
  # shellcheck disable=SC2086  # the test list is split into arguments on purpose
  read -r rc total failed skipped < <(PYTORCH_NO_CUDA_MEMORY_CACHING=1 LANE_PREFIX="timeout ${FK_PY_MEMCHECK_TIMEOUT:-420} compute-sanitizer --tool memcheck --kernel-name kns=flashkernel --report-api-errors no \
      --error-exitcode 9 --print-limit 20 --log-file $LOGDIR/memcheck-py.sanitizer.log" \
      pytest_lane memcheck-py -m "not triton" $PY_MEMCHECK_TESTS)
  san=$(grep -E 'ERROR SUMMARY' "$LOGDIR/memcheck-py.sanitizer.log" | tail -1)
  res=PASS; { [ "$rc" -ne 0 ] || [ "$failed" != 0 ]; } && res=FAIL
  finish memcheck-py $res "$total tests, $failed failed; ${san:-no sanitizer summary}" "$t0"
}

# The T4 and Ampere/Ada paths on this GPU (issue 22): a second, small build as PTX only
# (compute_75, then compute_80) that the driver JIT-compiles here, run with FLASHKERNEL_FORCE_ARCH
# so dispatch, tile choices and shared-memory limits are those of sm_75 (64 KiB) and sm_86 (99 KiB).
# A representative subset: every tensor-core op, the CUDA-core ops, the KV cache and the GPT-2
# engine. bf16 is refused on sm_75 (ArchDispatch.* asserts the error), so the typed bf16 cases of
# the tensor-core suites are left out there; then memcheck over attention and gelu_linear on sm_75.
# FK_OLD_ARCHS=0 skips the lane.
OLD_ARCH_FILTER=${FK_OLD_ARCH_FILTER:-"ArchDispatch.*:SmemLimits.*:AttentionTest/*:AttentionGpu.*:GeluLinearTest/*:ReduceTest/*:ReduceGpu.*:RopeTest/*:RopeGpu.*:AddLayerNormTest/*:KVCacheKernelTest/*:ModelsGpt2Engine.*"}
old_arch_run() {  # id, PTX arch, forced arch, extra negative filter
  local id=$1 ptx=$2 forced=$3 exclude=$4 t0 rc dir="${BUILD}-compute$2"
  t0=$(date +%s)
  rm -rf "$dir"
  if ! { cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHKERNEL_CUDA_ARCHS="$ptx-virtual" \
           -DFLASHKERNEL_BUILD_TORCH=OFF -DFLASHKERNEL_BUILD_BENCH=OFF && cmake --build "$dir" -j "$JOBS" --target flashkernel_tests; } \
         >"$LOGDIR/$id-build.log" 2>&1; then
    finish "$id" FAIL "build failed: see $id-build.log" "$t0"; return
  fi
  FLASHKERNEL_FORCE_ARCH=$forced "$dir/tests/cpp/flashkernel_tests" --gtest_filter="$OLD_ARCH_FILTER${exclude:+-$exclude}" \
      --gtest_output=xml:"$LOGDIR/$id.xml" >"$LOGDIR/$id.log" 2>&1; rc=$?
  local summary
  summary=$("$PY" - "$LOGDIR/$id.xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
skipped = sum(int(s.get("skipped", 0)) for s in r.iter("testsuite"))
print(r.get("tests"), int(r.get("failures", 0)) + int(r.get("errors", 0)), skipped)
PYEOF
)
  read -r total failed skipped <<<"${summary:-0 1 0}"
  local details="$total tests, $failed failed, $skipped skipped"
  if [ "$forced" = 75 ] && [ "$rc" -eq 0 ]; then
    FLASHKERNEL_FORCE_ARCH=75 timeout 300 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 \
        --print-limit 20 "$dir/tests/cpp/flashkernel_tests" --gtest_filter='AttentionTest/0.*:GeluLinearTest/0.*' \
        >"$LOGDIR/$id-memcheck.log" 2>&1; rc=$?
    details="$details; memcheck (attention, gelu_linear fp16) $( [ $rc -eq 0 ] && echo clean || echo "FAILED: see $id-memcheck.log")"
  fi
  local res=PASS; { [ "$rc" -ne 0 ] || [ "$failed" != 0 ] || [ "$skipped" != 0 ]; } && res=FAIL
  finish "$id" $res "$details" "$t0"
}
old_arch_lane() {
  case "$OLD_ARCHS" in 1|75) old_arch_run arch75 75 75 "AttentionTest/1.*:GeluLinearTest/1.*" ;; esac
  case "$OLD_ARCHS" in 1|86) old_arch_run arch86 80 86 "" ;; esac
}

declare -a BACKGROUND=()
if [ -x "$TESTS" ]; then
  t0=$(date +%s)
  if [ "${FK_GTEST:-1}" = 1 ]; then
  "$TESTS" --gtest_output=xml:"$LOGDIR/gtest.xml" >"$LOGDIR/gtest.log" 2>&1; rc=$?
  read -r total failed skipped < <("$PY" - "$LOGDIR/gtest.xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
# GTEST_SKIP counts only per suite; disabled tests count as skipped too.
skipped = sum(int(s.get("skipped", 0)) for s in r.iter("testsuite")) + int(r.get("disabled", 0))
print(r.get("tests"), int(r.get("failures", 0)) + int(r.get("errors", 0)), skipped)
PYEOF
)
  res=PASS; { [ "$rc" -ne 0 ] || [ "$failed" != 0 ] || [ "$skipped" != 0 ]; } && res=FAIL
  finish gtest $res "$total tests, $failed failed, $skipped skipped" "$t0"
  fi
  [ "$SANITIZERS" != 0 ] && { sanitizer_chain & BACKGROUND+=($!); }
else
  finish gtest FAIL "not built" "$(date +%s)"
  for id in memcheck initcheck racecheck synccheck; do finish $id FAIL "not run: no test binary" "$(date +%s)"; done
fi

[ "${FK_INTERP:-1}" = 1 ] && { interpreter_lane & BACKGROUND+=($!); }
[ "$OLD_ARCHS" != 0 ] && { old_arch_lane & BACKGROUND+=($!); }
[ "${FK_PY_MEMCHECK:-1}" = 1 ] && { python_memcheck_lane & BACKGROUND+=($!); }

# The Python GPU lane runs as FK_PYTEST_SHARDS pytest processes at once (every n-th test each,
# tests/python/conftest.py): the suite is bound by host work, and one process left the GPU idle
# most of the time.
t0=$(date +%s)
# Default: half the cores, 3 to 8. The suite grew past 1600 GPU tests, most of their time compiling
# Triton kernels (CPU): with 3 shards on an H100 machine (16 cores) the lane had reached 44% when a
# 540 s call ended; a run of 676 attention tests in 3 shards took 190 s.
SHARDS=${FK_PYTEST_SHARDS:-$(n=$(( $(nproc) / 2 )); echo $(( n < 3 ? 3 : (n > 8 ? 8 : n) )))}
declare -a SHARD_PIDS=()
for ((i = 0; i < SHARDS; i++)); do
  FK_PYTEST_SHARD=$i/$SHARDS pytest_lane gpu-$i -m "not exclusive_gpu" $PYTEST_PATHS >"$LOGDIR/pytest-gpu-$i.counts" &
  SHARD_PIDS+=($!)
done
wait "${SHARD_PIDS[@]}"
# Tests that need most of the GPU's memory (marker exclusive_gpu): with the shards' processes
# holding memory beside them they would skip (an H100 run did), so they run alone, last.
pytest_lane gpu-exclusive -m exclusive_gpu $PYTEST_PATHS >"$LOGDIR/pytest-gpu-exclusive.counts"
rc=0 total=0 failed=0 skipped=0
for counts in "$LOGDIR"/pytest-gpu-*.counts; do
  read -r r t f s <"$counts"
  # pytest's 5 is "no test selected": the exclusive pass of a run whose paths hold none.
  [ "${r:-1}" -ne 0 ] && { [ "${r:-1}" -ne 5 ] || [ "${t:-0}" != 0 ]; } && rc=1
  total=$((total + ${t:-0})) failed=$((failed + ${f:-0})) skipped=$((skipped + ${s:-0}))
done
res=PASS; { [ "$rc" -ne 0 ] || [ "$skipped" != 0 ] || [ "$total" = 0 ]; } && res=FAIL
finish pytest-gpu $res "$total tests in $SHARDS shards + an exclusive pass, $failed failed, $skipped skipped" "$t0"

wait "${BACKGROUND[@]}"

echo
echo "GPU check on $("$PY" -c 'import torch; print(torch.cuda.get_device_name())') in $(( $(date +%s) - START ))s; logs in $LOGDIR"
printf '%-30s %-6s %s\n' step result details
printf '%-30s %-6s %s\n' ---- ------ -------
fail=0
for entry in "${STEPS[@]}"; do
  id=${entry%%|*} name=${entry#*|}
  if [ -f "$LOGDIR/$id.result" ]; then IFS=$'\t' read -r res details <"$LOGDIR/$id.result"
  else res=FAIL details="no result (the step did not finish)"; fi
  printf '%-30s %-6s %s\n' "$name" "$res" "$details"
  [ "$res" = PASS ] || fail=1
done
# A skipped test fails the check: say which and why, so the log answers it without another run.
grep -h '^SKIPPED' "$LOGDIR"/pytest-*.log 2>/dev/null | sort | uniq -c | head -20
[ $fail -eq 0 ] && echo "GPU CHECK PASSED" || echo "GPU CHECK FAILED"
exit $fail
