// This machine's host name, for the files callbacks name after it (TensorBoard's event files, the
// timeline's process labels); "localhost" when it cannot be read.
#pragma once
#include <unistd.h>

#include <string>

namespace tandem {

inline std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace tandem
