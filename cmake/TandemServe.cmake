# The server's dependencies (Debian 12: protobuf-compiler, protobuf-compiler-grpc, libprotobuf-dev,
# libgrpc++-dev, libcpp-httplib-dev, prometheus-cpp-dev) and the .proto subsets in proto/,
# compiled at build time into tandem_proto (generated code is never committed).
# Sets TANDEM_HAVE_SERVE.
set(TANDEM_HAVE_SERVE OFF)
if(TANDEM_SERVE STREQUAL "OFF")
  return()
endif()
find_package(PkgConfig QUIET)
find_package(Protobuf QUIET)
find_program(TANDEM_GRPC_CPP_PLUGIN grpc_cpp_plugin)
find_package(prometheus-cpp CONFIG QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(TANDEM_GRPCPP QUIET IMPORTED_TARGET grpc++)
  pkg_check_modules(TANDEM_HTTPLIB QUIET IMPORTED_TARGET cpp-httplib)
endif()
set(_missing "")
foreach(dep Protobuf_FOUND Protobuf_PROTOC_EXECUTABLE TANDEM_GRPC_CPP_PLUGIN prometheus-cpp_FOUND TANDEM_GRPCPP_FOUND
            TANDEM_HTTPLIB_FOUND)
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

file(GLOB_RECURSE TANDEM_PROTOS CONFIGURE_DEPENDS RELATIVE ${PROJECT_SOURCE_DIR}/proto ${PROJECT_SOURCE_DIR}/proto/*.proto)
set(_gen ${PROJECT_BINARY_DIR}/proto_gen)
set(_srcs "")
foreach(p ${TANDEM_PROTOS})
  string(REGEX REPLACE "\\.proto$" "" base ${p})
  set(outs ${_gen}/${base}.pb.cc ${_gen}/${base}.pb.h)
  set(grpc_flags "")
  if(p MATCHES "_service\\.proto$")
    list(APPEND outs ${_gen}/${base}.grpc.pb.cc ${_gen}/${base}.grpc.pb.h)
    set(grpc_flags --grpc_out=${_gen} --plugin=protoc-gen-grpc=${TANDEM_GRPC_CPP_PLUGIN})
  endif()
  add_custom_command(
    OUTPUT ${outs}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${_gen}
    COMMAND ${Protobuf_PROTOC_EXECUTABLE} -I ${PROJECT_SOURCE_DIR}/proto -I ${Protobuf_INCLUDE_DIRS} --cpp_out=${_gen}
            ${grpc_flags} ${PROJECT_SOURCE_DIR}/proto/${p}
    DEPENDS ${PROJECT_SOURCE_DIR}/proto/${p}
    COMMENT "protoc ${p}")
  list(FILTER outs INCLUDE REGEX "\\.cc$")
  list(APPEND _srcs ${outs})
endforeach()
add_library(tandem_proto STATIC ${_srcs})
target_include_directories(tandem_proto SYSTEM PUBLIC ${_gen})
target_link_libraries(tandem_proto PUBLIC protobuf::libprotobuf PkgConfig::TANDEM_GRPCPP)
set_target_properties(tandem_proto PROPERTIES POSITION_INDEPENDENT_CODE ON)
set(TANDEM_HAVE_SERVE ON)
