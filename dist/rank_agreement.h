// What the ranks of a multi-worker job must agree on before their first training collective: the
// run's configuration (one value, compared as a digest) and the contents of their input files, which
// on a cluster each host reads from its own disk.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dist/communicator.h"

namespace tandem {

// This rank's host name as the messages of dist/ name it (at most 63 characters).
std::string this_host();

// Throws Error(Communication) naming the ranks whose `value` differs from rank 0's (compared as
// digests gathered from every rank).
void require_same_on_all_ranks(Communicator& comm, const std::string& what, const std::string& value);

// One input file as this rank read it: its path and a digest of its decoded contents.
struct InputDigest {
  std::string path;
  uint32_t digest = 0;
};

// Every rank must pass the same number of inputs, in the same order, and hold the same contents for
// each. Throws Error(Data) naming the first input that differs, with the hosts and ranks that read a
// different copy from rank 0's and rank 0's host (host names from gethostname on each rank).
void require_same_inputs(Communicator& comm, const std::vector<InputDigest>& inputs);

}  // namespace tandem
