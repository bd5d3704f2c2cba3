# Shared compile options for every target that holds CUDA code.
function(flashkernel_cuda_options target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr --extended-lambda -lineinfo -Xcompiler=-Wall>
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra>)
endfunction()

# With FLASHKERNEL_ONLY_OPS set, keeps only the files of `list_var` whose name (the first capture
# group of `regex`: a folder, or a file name like reduce_ops / test_reduce_rows) starts with an op
# of FLASHKERNEL_ONLY_OPS or of `always`.
function(flashkernel_filter_ops list_var regex always)
  if(NOT FLASHKERNEL_ONLY_OPS)
    return()
  endif()
  set(kept)
  foreach(f ${${list_var}})
    if(f MATCHES "${regex}")
      set(name ${CMAKE_MATCH_1})
      foreach(op ${FLASHKERNEL_ONLY_OPS} ${always})
        string(FIND "${name}" "${op}" pos)
        if(pos EQUAL 0)
          list(APPEND kept ${f})
          break()
        endif()
      endforeach()
    endif()
  endforeach()
  set(${list_var} ${kept} PARENT_SCOPE)
endfunction()
