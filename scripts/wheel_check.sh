#!/usr/bin/env bash
# Builds the wheel the way a user does (pip, --no-build-isolation), installs it into a fresh
# virtual environment, and runs CPU checks from the installed package, outside the checkout.
# scripts/test.sh runs it. Environment (besides common.sh's): FK_WHEEL_CUDA_ARCHS (default 90a:
# one architecture keeps this second CUDA build short; the packaging does not depend on it).
source "$(dirname "$0")/common.sh"
ensure_dependencies
WHEEL_ARCHS=${FK_WHEEL_CUDA_ARCHS:-90a}
WORK="$BUILD/wheel"
LOGDIR=${FLASHKERNEL_TEST_LOGS:-$BUILD/test-logs}
mkdir -p "$WORK" "$LOGDIR"
rm -rf "$WORK/dist" "$WORK/venv"

# The CMake tree under $WORK/cmake is kept between runs, so a rebuild only recompiles what changed.
log "wheel: pip wheel --no-build-isolation (CUDA archs: $WHEEL_ARCHS), log in $LOGDIR/wheel-build.log"
if ! FLASHKERNEL_CUDA_ARCHS="$WHEEL_ARCHS" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
     "$PY" -m pip wheel -v --no-build-isolation --no-deps -w "$WORK/dist" \
     -C build-dir="$WORK/cmake" . >"$LOGDIR/wheel-build.log" 2>&1; then
  tail -n 60 "$LOGDIR/wheel-build.log"
  echo "wheel build FAILED"
  exit 1
fi
wheel=$(ls "$WORK"/dist/flashkernel-*.whl)
echo "built $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"

# A fresh environment that sees the running one's packages (torch, Triton: gigabytes that need
# not be downloaded again) behind its own. `venv --system-site-packages` is not enough: when this
# Python is itself a virtual environment (as in CI), that option exposes the base interpreter's
# packages, not this one's, so a .pth file adds this environment's site-packages instead. The
# venv's own site-packages comes first on sys.path, so the installed flashkernel is the one found.
log "wheel: install into a fresh virtual environment, run CPU checks from the installed package"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
outer=$("$PY" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"])' | sort -u)
inner=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for dir in $outer; do echo "import site; site.addsitedir('$dir')"; done >"$inner/zz_outer_environment.pth"
# --no-index: the wheel's dependencies (torch== the version it was built against, triton, numpy)
# must already be satisfied by the environment it was built in.
"$VPY" -m pip install -q --no-index --disable-pip-version-check "$wheel"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
env -u PYTHONPATH -u FLASHKERNEL_LIB_DIR "$WORK/venv/bin/flashkernel" --version
env -u PYTHONPATH -u FLASHKERNEL_LIB_DIR FK_VENV="$WORK/venv" "$VPY" - <<'PYEOF'
import os
import pathlib
import sys
from importlib import metadata

import torch

import flashkernel

pkg = pathlib.Path(flashkernel.__file__).resolve().parent
venv = pathlib.Path(os.environ["FK_VENV"]).resolve()
assert pkg.is_relative_to(venv), f"flashkernel imported from {pkg}, not from the installed wheel in {venv}"
libs = sorted(p.name for p in pkg.iterdir() if ".so" in p.name)
assert libs == ["_flashkernel_ops.so", "libflashkernel.so"], f"expected one copy of each library, found {libs}"
requires = metadata.requires("flashkernel") or []
assert f"torch=={torch.__version__.split('+')[0]}" in requires, f"wheel does not pin the torch it was built with: {requires}"
# The op library is loaded and its argument checks run on the CPU.
try:
    flashkernel.vector_add(torch.ones(3), torch.ones(3))
except ValueError as e:
    assert "argument 'a' must be a CUDA tensor" in str(e), e
else:
    sys.exit("vector_add accepted CPU tensors")
size = sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file())
print(f"installed flashkernel {metadata.version('flashkernel')} from {pkg}: {size / 2**20:.0f} MiB, "
      f"libraries {libs}, requires {requires}")
PYEOF
echo "wheel check passed"
