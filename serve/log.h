// The server's log: one line per event (load, unload, state change, config reload, errors), with a
// UTC timestamp, to standard error. Safe from any thread.
#pragma once
#include <string>

namespace tandem::serve {

void log_info(const std::string& line);
void log_error(const std::string& line);

}  // namespace tandem::serve
