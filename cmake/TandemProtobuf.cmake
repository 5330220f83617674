# Protobuf (Debian 12: protobuf-compiler, libprotobuf-dev 3.21; tools/setup.sh installs them), required:
# the SavedModel and ONNX writers and their readers behind `tandem inspect` use classes generated from
# the .proto subsets in proto/tensorflow and proto/onnx, compiled by protoc at build time into
# <build>/proto_gen and the library tandem_pb (messages only, no gRPC; generated code is never committed:
# it must match the installed runtime's version). The server's API (proto/tensorflow_serving) is built on
# it by cmake/TandemServe.cmake.
# Defines tandem_compile_protos(<out_var> <proto paths relative to proto/>...): adds the protoc commands
# (and grpc_cpp_plugin's for *_service.proto, which needs TANDEM_GRPC_CPP_PLUGIN) and sets <out_var> to
# the generated .pb.cc files. Sets TANDEM_PROTO_GEN_DIR.
find_package(Protobuf QUIET)
if(NOT Protobuf_FOUND OR NOT Protobuf_PROTOC_EXECUTABLE)
  message(FATAL_ERROR "protobuf was not found: the SavedModel and ONNX exporters need libprotobuf and protoc "
                      "(apt-get install protobuf-compiler libprotobuf-dev; tools/setup.sh installs them)")
endif()

set(TANDEM_PROTO_GEN_DIR ${PROJECT_BINARY_DIR}/proto_gen)

function(tandem_compile_protos out_var)
  set(gen ${TANDEM_PROTO_GEN_DIR})
  set(srcs "")
  foreach(p ${ARGN})
    string(REGEX REPLACE "\\.proto$" "" base ${p})
    set(outs ${gen}/${base}.pb.cc ${gen}/${base}.pb.h)
    set(grpc_flags "")
    if(p MATCHES "_service\\.proto$")
      list(APPEND outs ${gen}/${base}.grpc.pb.cc ${gen}/${base}.grpc.pb.h)
      set(grpc_flags --grpc_out=${gen} --plugin=protoc-gen-grpc=${TANDEM_GRPC_CPP_PLUGIN})
    endif()
    add_custom_command(
      OUTPUT ${outs}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${gen}
      COMMAND ${Protobuf_PROTOC_EXECUTABLE} -I ${PROJECT_SOURCE_DIR}/proto -I ${Protobuf_INCLUDE_DIRS} --cpp_out=${gen}
              ${grpc_flags} ${PROJECT_SOURCE_DIR}/proto/${p}
      DEPENDS ${PROJECT_SOURCE_DIR}/proto/${p}
      COMMENT "protoc ${p}")
    list(FILTER outs INCLUDE REGEX "\\.cc$")
    list(APPEND srcs ${outs})
  endforeach()
  set(${out_var} ${srcs} PARENT_SCOPE)
endfunction()

file(GLOB_RECURSE _protos CONFIGURE_DEPENDS RELATIVE ${PROJECT_SOURCE_DIR}/proto ${PROJECT_SOURCE_DIR}/proto/tensorflow/*.proto
     ${PROJECT_SOURCE_DIR}/proto/onnx/*.proto)
tandem_compile_protos(_srcs ${_protos})
add_library(tandem_pb STATIC ${_srcs})
target_include_directories(tandem_pb SYSTEM PUBLIC ${TANDEM_PROTO_GEN_DIR})
target_link_libraries(tandem_pb PUBLIC protobuf::libprotobuf)
set_target_properties(tandem_pb PROPERTIES POSITION_INDEPENDENT_CODE ON)
