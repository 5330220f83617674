// Whole-file writes that never leave a half-written file: write a temporary sibling, fsync,
// rename over the target.
#pragma once
#include <string>

namespace tandem {

void write_file_atomic(const std::string& path, const std::string& content);
std::string read_text_file(const std::string& path);  // throws Error(Io) naming the path

}  // namespace tandem
