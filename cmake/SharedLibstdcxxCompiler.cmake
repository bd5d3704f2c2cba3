# Included before project(): make sure the C++ compiler (and nvcc's host compiler) link libstdc++
# as a shared library. Our libraries are loaded into processes that already hold the system's
# libstdc++ (python + torch); a compiler whose libstdc++ exists only as a static archive (seen:
# a standalone GCC under /opt that CXX pointed to) copies a second libstdc++ into our .so, and
# the two then share iostream/locale objects: torch's error formatting crashed inside it.
# When CXX names such a compiler and the system one exists, use the system compiler instead.
function(_fk_has_shared_libstdcxx compiler out)
  execute_process(COMMAND ${compiler} -print-file-name=libstdc++.so
                  OUTPUT_VARIABLE path OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
  if(rc EQUAL 0 AND IS_ABSOLUTE "${path}" AND EXISTS "${path}")
    set(${out} ON PARENT_SCOPE)
  else()
    set(${out} OFF PARENT_SCOPE)
  endif()
endfunction()

if(NOT CMAKE_CXX_COMPILER AND DEFINED ENV{CXX})
  _fk_has_shared_libstdcxx("$ENV{CXX}" _fk_shared)
  find_program(_fk_system_cxx NAMES g++ c++ PATHS /usr/bin NO_DEFAULT_PATH)
  if(NOT _fk_shared AND _fk_system_cxx)
    _fk_has_shared_libstdcxx("${_fk_system_cxx}" _fk_system_shared)
    if(_fk_system_shared)
      message(STATUS "FlashKernel: CXX=$ENV{CXX} has no shared libstdc++; using ${_fk_system_cxx} instead")
      set(CMAKE_CXX_COMPILER "${_fk_system_cxx}" CACHE FILEPATH "C++ compiler" FORCE)
      set(CMAKE_CUDA_HOST_COMPILER "${_fk_system_cxx}" CACHE FILEPATH "nvcc host compiler" FORCE)
    endif()
  endif()
endif()
