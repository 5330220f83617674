# Finds cuDNN and NCCL next to the CUDA toolkit, under CUDNN_ROOT / NCCL_ROOT, or inside the
# nvidia-cudnn-cu13 / nvidia-nccl-cu13 Python wheels (as on GPU machines that ship only PyTorch).
set(_tandem_wheel_dirs "")
find_program(_tandem_python NAMES python3 python)
if(_tandem_python)
  execute_process(
    COMMAND ${_tandem_python} -c "import site,sys; print(';'.join(site.getsitepackages()+[site.getusersitepackages()]))"
    OUTPUT_VARIABLE _tandem_site OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  foreach(_d ${_tandem_site})
    list(APPEND _tandem_wheel_dirs ${_d}/nvidia/cudnn ${_d}/nvidia/nccl ${_d}/nvidia/cu13 ${_d}/nvidia)
  endforeach()
endif()

set(_tandem_gpu_hints $ENV{CUDNN_ROOT} ${CUDNN_ROOT} $ENV{NCCL_ROOT} ${NCCL_ROOT} ${CUDAToolkit_LIBRARY_ROOT}
                      /usr/local/cuda /usr ${_tandem_wheel_dirs})

find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${_tandem_gpu_hints} PATH_SUFFIXES include)
find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 HINTS ${_tandem_gpu_hints} PATH_SUFFIXES lib64 lib)
if(CUDNN_INCLUDE_DIR AND CUDNN_LIBRARY)
  add_library(tandem::cudnn INTERFACE IMPORTED)
  target_include_directories(tandem::cudnn INTERFACE ${CUDNN_INCLUDE_DIR})
  target_link_libraries(tandem::cudnn INTERFACE ${CUDNN_LIBRARY})
  set(TANDEM_HAVE_CUDNN ON)
endif()

find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${_tandem_gpu_hints} PATH_SUFFIXES include)
find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_tandem_gpu_hints} PATH_SUFFIXES lib64 lib)
if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
  add_library(tandem::nccl INTERFACE IMPORTED)
  target_include_directories(tandem::nccl INTERFACE ${NCCL_INCLUDE_DIR})
  target_link_libraries(tandem::nccl INTERFACE ${NCCL_LIBRARY})
  set(TANDEM_HAVE_NCCL ON)
endif()
