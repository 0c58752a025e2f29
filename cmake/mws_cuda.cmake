# Decides whether the CUDA backend is built. AUTO builds it when nvcc is found (PATH,
# CUDACXX or /usr/local/cuda); the binaries still run, on the CPU backend, where no GPU is.

set(MWS_HAVE_CUDA OFF)
if(NOT MWS_ENABLE_CUDA STREQUAL "OFF" AND NOT MWS_SANITIZE)
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # Hopper natively, plus PTX that any newer or Ampere-class GPU can JIT.
      set(CMAKE_CUDA_ARCHITECTURES "90-real;80-virtual")
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(MWS_HAVE_CUDA ON)
  endif()
endif()
if(MWS_ENABLE_CUDA STREQUAL "ON" AND NOT MWS_HAVE_CUDA)
  message(FATAL_ERROR "MWS_ENABLE_CUDA=ON but no usable nvcc was found (or a sanitizer build)")
endif()
message(STATUS "mws: CUDA backend ${MWS_HAVE_CUDA}")
