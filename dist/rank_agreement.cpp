#include "dist/rank_agreement.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>

#include "engine/checksum.h"
#include "engine/errors.h"

namespace tandem {
namespace {

constexpr size_t kHostBytes = 64;

std::string rank_list(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

}  // namespace

std::string this_host() {
  char name[kHostBytes] = {0};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "(unknown host)";
  return name;
}

void require_same_on_all_ranks(Communicator& comm, const std::string& what, const std::string& value) {
  // Compare fixed-size digests of the values, gathered from every rank.
  char mine[32] = {0};
  std::snprintf(mine, sizeof(mine), "%08x%08x", crc32c(value.data(), value.size()),
                crc32c(value.data(), value.size(), 0x5bd1e995u));
  std::vector<char> all(sizeof(mine) * static_cast<size_t>(comm.size()));
  comm.all_gather(mine, sizeof(mine), all.data());
  std::string bad;
  for (int r = 1; r < comm.size(); ++r)
    if (std::memcmp(all.data() + r * sizeof(mine), all.data(), sizeof(mine)) != 0)
      bad += (bad.empty() ? "" : ", ") + std::to_string(r);
  if (!bad.empty())
    throw Error(ErrorKind::Communication, what + " differs between rank 0 and rank(s) " + bad,
                "every rank must be started with the same flags, model and data");
}

void require_same_inputs(Communicator& comm, const std::vector<InputDigest>& inputs) {
  // Each rank sends its host name, its input count and one digest per input (a count that differs
  // is the first input that differs); a rank with fewer inputs pads with zeros.
  require_same_on_all_ranks(comm, "the list of input files (" + std::to_string(inputs.size()) + ")",
                            std::to_string(inputs.size()));
  const size_t record = kHostBytes + inputs.size() * sizeof(uint32_t);
  std::vector<char> mine(record, 0);
  const std::string host = this_host();
  std::memcpy(mine.data(), host.data(), std::min(host.size(), kHostBytes - 1));
  for (size_t i = 0; i < inputs.size(); ++i)
    std::memcpy(mine.data() + kHostBytes + i * sizeof(uint32_t), &inputs[i].digest, sizeof(uint32_t));
  std::vector<char> all(record * static_cast<size_t>(comm.size()));
  comm.all_gather(mine.data(), record, all.data());

  auto host_of = [&](int r) { return std::string(all.data() + static_cast<size_t>(r) * record); };
  auto digest_of = [&](int r, size_t i) {
    uint32_t d = 0;
    std::memcpy(&d, all.data() + static_cast<size_t>(r) * record + kHostBytes + i * sizeof(uint32_t), sizeof(d));
    return d;
  };
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::map<std::string, std::vector<int>> differing;  // host -> ranks whose copy differs
    for (int r = 1; r < comm.size(); ++r)
      if (digest_of(r, i) != digest_of(0, i)) differing[host_of(r)].push_back(r);
    if (differing.empty()) continue;
    std::string where;
    for (const auto& [h, ranks] : differing)
      where += (where.empty() ? "" : "; ") + ("host " + h + " (rank(s) " + rank_list(ranks) + ")");
    throw Error(ErrorKind::Data,
                "the input file " + inputs[i].path + " differs between ranks: " + where +
                    " read different contents from rank 0 on host " + host_of(0),
                "every host must hold the same data set: copy " + inputs[i].path + " from " + host_of(0) +
                    " to the other hosts, or point --data at a shared file system");
  }
}

}  // namespace tandem
