# Sourced by the scripts: installs what is missing, then configures and builds the project.
# Environment: PYTHON (default python3), FLASHKERNEL_BUILD_DIR (default build),
# FLASHKERNEL_CUDA_ARCHS (default 80;90a), FLASHKERNEL_JOBS (default: all cores).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
BUILD=${FLASHKERNEL_BUILD_DIR:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
ARCHS=${FLASHKERNEL_CUDA_ARCHS:-80;90a}
JOBS=${FLASHKERNEL_JOBS:-$(nproc)}

log() { printf '\n=== %s\n' "$*"; }

# A CXX whose libstdc++ is only a static archive (seen on a GPU image: a standalone GCC in CXX/CC)
# must not build anything loaded into the Python process next to torch: neither our libraries
# (CMake switches those itself) nor the modules torch.compile/Triton compile at run time, which
# use CC/CXX. Point all of them at the system compiler in that case.
use_shared_libstdcxx_compilers() {
  local cxx=${CXX:-}
  [ -n "$cxx" ] || return 0
  case "$("$cxx" -print-file-name=libstdc++.so 2>/dev/null)" in
    /*) return 0 ;;
  esac
  if [ -x /usr/bin/g++ ] && [ -x /usr/bin/gcc ]; then
    echo "note: CXX=$cxx has no shared libstdc++; using /usr/bin/gcc and /usr/bin/g++ for this run"
    export CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++
  fi
}

ensure_dependencies() {
  use_shared_libstdcxx_compilers
  if ! "$PY" -c "import torch, triton, pytest, numpy, transformers, matplotlib" 2>/dev/null; then
    # requirements-lock.txt pins every version (the direct dependencies and what they pull in).
    log "installing Python dependencies (requirements-dev.txt, versions from requirements-lock.txt)"
    "$PY" -m pip install -q -r requirements-dev.txt -c requirements-lock.txt
  fi
  # The wheel check and the linter (an image that already has torch may lack these two).
  if ! "$PY" -c "import scikit_build_core" 2>/dev/null || ! "$PY" -m ruff --version >/dev/null 2>&1; then
    log "installing scikit-build-core and ruff (versions from requirements-lock.txt)"
    # Not needed to build, test or benchmark: a machine without a package index goes on without them,
    # after one quick try (pip's default 5 retries with back-off cost a GPU call most of a minute).
    "$PY" -m pip install -q --retries 0 --timeout 10 scikit-build-core ruff -c requirements-lock.txt ||
      echo "warning: scikit-build-core/ruff could not be installed: the wheel check and the linter will fail" >&2
  fi
  if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
    log "installing cmake/ninja"
    "$PY" -m pip install -q cmake ninja -c requirements-lock.txt
  fi
  if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
  fi
  command -v nvcc >/dev/null || { echo "error: nvcc (CUDA toolkit >= 12.8) not found" >&2; exit 1; }
  if ! compgen -G "/usr/lib/*/cmake/GTest/GTestConfig.cmake" >/dev/null &&
     ! compgen -G "/usr/lib/cmake/GTest/GTestConfig.cmake" >/dev/null &&
     ! compgen -G "/usr/local/lib*/cmake/GTest/GTestConfig.cmake" >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      log "installing GoogleTest (apt)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgtest-dev >/dev/null
    fi
  fi
}

build_project() {
  log "configuring $BUILD (CUDA archs: $ARCHS)"
  mkdir -p "$BUILD"
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHKERNEL_CUDA_ARCHS="$ARCHS" \
        -DPython3_EXECUTABLE="$(command -v "$PY")" ${FLASHKERNEL_CMAKE_ARGS:-} >"$BUILD/configure.log" 2>&1 \
    || { cat "$BUILD/configure.log"; exit 1; }
  # What was chosen (compilers, torch) goes into the build log: a GPU-machine log must say it.
  grep -E "FlashKernel:|The (CXX|CUDA) compiler identification" "$BUILD/configure.log" || true
  grep -E "^CMAKE_(CXX_COMPILER|CUDA_HOST_COMPILER):" "$BUILD/CMakeCache.txt" || true
  log "building with $JOBS jobs"
  cmake --build "$BUILD" -j "$JOBS"
  export FLASHKERNEL_LIB_DIR="$BUILD/python/flashkernel"
  export FLASHKERNEL_BENCH_DIR="$BUILD/bench"
  export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
}

gpu_present() { "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
