# TensorFlow Lite export (`tandem export --format tflite`, `tandem inspect` of a model.tflite):
# Debian 12's flatbuffers-compiler and libflatbuffers-dev (2.0.8). export/tflite_schema.fbs is
# compiled by flatc at build time into <build>/flatbuffers_gen/export/tflite_schema_generated.h
# (generated code is never committed: it must match the installed runtime's version check).
# Without flatbuffers the rest of Tandem builds and the tflite format fails at run time with a hint.
# Sets TANDEM_HAVE_TFLITE and, when ON, TANDEM_TFLITE_GEN_DIR (the include directory of the generated
# header) and the target tandem_tflite_schema_gen that writes it. The builder and the verifier are
# header-only: nothing is linked.
set(TANDEM_HAVE_TFLITE OFF)
if(TANDEM_TFLITE STREQUAL "OFF")
  return()
endif()
find_package(FlatBuffers CONFIG QUIET)
find_program(TANDEM_FLATC flatc)
if(NOT FlatBuffers_FOUND OR NOT TANDEM_FLATC)
  if(TANDEM_TFLITE STREQUAL "ON")
    message(FATAL_ERROR "TANDEM_TFLITE=ON but flatbuffers was not found "
                        "(apt-get install flatbuffers-compiler libflatbuffers-dev; tools/setup.sh installs them)")
  endif()
  message(STATUS "tflite export: off (flatbuffers not found: apt-get install flatbuffers-compiler libflatbuffers-dev)")
  return()
endif()

set(_fbs ${PROJECT_SOURCE_DIR}/export/tflite_schema.fbs)
set(_gen ${PROJECT_BINARY_DIR}/flatbuffers_gen)
set(_header ${_gen}/export/tflite_schema_generated.h)
add_custom_command(
  OUTPUT ${_header}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${_gen}/export
  COMMAND ${TANDEM_FLATC} --cpp --scoped-enums -o ${_gen}/export ${_fbs}
  DEPENDS ${_fbs}
  COMMENT "flatc export/tflite_schema.fbs")
add_custom_target(tandem_tflite_schema_gen DEPENDS ${_header})
set(TANDEM_TFLITE_GEN_DIR ${_gen})
set(TANDEM_HAVE_TFLITE ON)
