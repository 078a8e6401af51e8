# A Ninja job pool for libflashgen's compile jobs, so a wide build cannot run out of memory.
#
# One kernel translation unit makes nvcc (cicc, ptxas) hold up to ~4.3 GB at its peak (forward
# kernels, measured; codegen/estimate.py), so the number of concurrent compiles is bounded by
# RAM as well as by cores. The default budget of 5 GB per job leaves room for the host
# compiler and for heavier instantiations. CMAKE_BUILD_PARALLEL_LEVEL (or ninja -j) still sets the overall
# limit; this pool only caps it further when memory is the tighter bound.
set(FLASHGEN_NVCC_JOB_MEMORY_MB 5120 CACHE STRING "Memory budgeted per concurrent kernel compile (MiB)")
if(NOT FLASHGEN_NVCC_JOBS AND DEFINED ENV{FLASHGEN_NVCC_JOBS})
  set(FLASHGEN_NVCC_JOBS "$ENV{FLASHGEN_NVCC_JOBS}")
endif()
if(NOT FLASHGEN_NVCC_JOBS)
  cmake_host_system_information(RESULT _flashgen_total_mb QUERY TOTAL_PHYSICAL_MEMORY)
  math(EXPR _flashgen_jobs "${_flashgen_total_mb} / ${FLASHGEN_NVCC_JOB_MEMORY_MB}")
  if(_flashgen_jobs LESS 1)
    set(_flashgen_jobs 1)
  endif()
  set(FLASHGEN_NVCC_JOBS "${_flashgen_jobs}" CACHE STRING
      "Most concurrent libflashgen compile jobs (default: total RAM / FLASHGEN_NVCC_JOB_MEMORY_MB)")
endif()
set_property(GLOBAL APPEND PROPERTY JOB_POOLS flashgen_compile=${FLASHGEN_NVCC_JOBS})
set_property(TARGET ${_flashgen_targets} PROPERTY JOB_POOL_COMPILE flashgen_compile)
message(STATUS "flashgen: at most ${FLASHGEN_NVCC_JOBS} concurrent compile job(s) (FLASHGEN_NVCC_JOBS)")
