# Locates the torch that the chosen Python imports and describes it as an imported target
# (flashkernel_torch). We read paths from torch itself instead of find_package(Torch) because
# the op library only needs headers + libraries, and Torch's own CMake config insists on
# CUDA/arch probing that fails on machines without a GPU.
set(FLASHKERNEL_TORCH_FOUND OFF)
find_package(Python3 COMPONENTS Interpreter)
if(NOT Python3_Interpreter_FOUND)
  return()
endif()
execute_process(
  COMMAND ${Python3_EXECUTABLE} -c "import os, torch; print(os.path.dirname(torch.__file__)); print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); print(torch.__version__)"
  OUTPUT_VARIABLE _fk_torch_out RESULT_VARIABLE _fk_torch_rc ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _fk_torch_rc EQUAL 0)
  return()
endif()
string(REPLACE "\n" ";" _fk_torch_out "${_fk_torch_out}")
list(GET _fk_torch_out 0 _fk_torch_dir)
list(GET _fk_torch_out 1 _fk_torch_abi)
list(GET _fk_torch_out 2 _fk_torch_version)
message(STATUS "FlashKernel: building PyTorch ops against torch ${_fk_torch_version} at ${_fk_torch_dir}")
# The exact torch.__version__ the op library is compiled against (recorded next to it, see CMakeLists.txt).
set(FLASHKERNEL_TORCH_VERSION "${_fk_torch_version}")
add_library(flashkernel_torch INTERFACE)
target_include_directories(flashkernel_torch SYSTEM INTERFACE
  ${_fk_torch_dir}/include ${_fk_torch_dir}/include/torch/csrc/api/include)
target_compile_definitions(flashkernel_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${_fk_torch_abi})
foreach(_lib c10 c10_cuda torch_cpu torch_cuda torch)
  find_library(_fk_lib_${_lib} NAMES ${_lib} PATHS ${_fk_torch_dir}/lib NO_DEFAULT_PATH REQUIRED)
  target_link_libraries(flashkernel_torch INTERFACE ${_fk_lib_${_lib}})
endforeach()
target_link_libraries(flashkernel_torch INTERFACE CUDA::cudart)
set(FLASHKERNEL_TORCH_FOUND ON)
