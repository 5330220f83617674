# The server's dependencies (Debian 12: protobuf-compiler-grpc, libgrpc++-dev, libcpp-httplib-dev,
# prometheus-cpp-dev; protobuf itself is the core build's, cmake/TandemProtobuf.cmake) and its API, the
# .proto subsets in proto/tensorflow_serving, compiled at build time into tandem_proto (messages and
# gRPC services) on top of tandem_pb (the TensorFlow messages they share with the exporters).
# Sets TANDEM_HAVE_SERVE.
set(TANDEM_HAVE_SERVE OFF)
if(TANDEM_SERVE STREQUAL "OFF")
  return()
endif()
find_package(PkgConfig QUIET)
find_program(TANDEM_GRPC_CPP_PLUGIN grpc_cpp_plugin)
find_package(prometheus-cpp CONFIG QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(TANDEM_GRPCPP QUIET IMPORTED_TARGET grpc++)
  pkg_check_modules(TANDEM_HTTPLIB QUIET IMPORTED_TARGET cpp-httplib)
endif()
set(_missing "")
foreach(dep TANDEM_GRPC_CPP_PLUGIN prometheus-cpp_FOUND TANDEM_GRPCPP_FOUND TANDEM_HTTPLIB_FOUND)
  if(NOT ${dep})
    list(APPEND _missing ${dep})
  endif()
endforeach()
if(_missing)
  if(TANDEM_SERVE STREQUAL "ON")
    message(FATAL_ERROR "TANDEM_SERVE=ON but missing: ${_missing} (tools/setup.sh installs them)")
  endif()
  message(STATUS "tandem serve: off (missing ${_missing})")
  return()
endif()

file(GLOB_RECURSE _protos CONFIGURE_DEPENDS RELATIVE ${PROJECT_SOURCE_DIR}/proto
     ${PROJECT_SOURCE_DIR}/proto/tensorflow_serving/*.proto)
tandem_compile_protos(_srcs ${_protos})
add_library(tandem_proto STATIC ${_srcs})
target_link_libraries(tandem_proto PUBLIC tandem_pb PkgConfig::TANDEM_GRPCPP)
set_target_properties(tandem_proto PROPERTIES POSITION_INDEPENDENT_CODE ON)
set(TANDEM_HAVE_SERVE ON)
