// Tests for jobs launched without MPI (dist/launch_env, dist/rendezvous, dist/gloo_communicator):
// TF_CONFIG and torchrun's variables, parsed strictly; and a four-rank Gloo job in one process on
// loopback, whose collectives are compared with sums computed here.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dist/communicator.h"
#include "dist/launch_env.h"
#include "dist/rendezvous.h"
#include "engine/errors.h"

using tandem::Error;
using tandem::ErrorKind;
using tandem::LaunchEnv;

namespace {

// The message of the error `f` throws (kind InvalidArgument), or "" if none.
std::string invalid(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::InvalidArgument);
    CHECK(!e.hint().empty());
    return e.what();
  }
  return "";
}

std::function<const char*(const char*)> vars(std::map<std::string, std::string> m) {
  auto held = std::make_shared<std::map<std::string, std::string>>(std::move(m));
  return [held](const char* name) -> const char* {
    auto it = held->find(name);
    return it == held->end() ? nullptr : it->second.c_str();
  };
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

}  // namespace

TEST_CASE("TF_CONFIG: the chief is rank 0, then the workers in order", "[cpu][dist]") {
  const std::string cluster = R"("cluster": {"chief": ["h1:2222"], "worker": ["h1:2223", "h2:2222", "[::1]:7"]})";
  LaunchEnv e = tandem::parse_tf_config("{" + cluster + R"(, "task": {"type": "chief", "index": 0}})");
  CHECK(e.source == "TF_CONFIG");
  CHECK(e.rank == 0);
  CHECK(e.size == 4);
  CHECK(e.rendezvous_host == "h1");
  CHECK(e.rendezvous_port == 2222);
  e = tandem::parse_tf_config("{" + cluster + R"(, "task": {"type": "worker", "index": 2}})");
  CHECK(e.rank == 3);
  CHECK(e.rendezvous_host == "h1");
  REQUIRE(e.names.size() == 4);
  CHECK(e.names[3] == "worker 2 ([::1]:7)");
  // Without a chief, worker 0 is rank 0 and serves the rendezvous.
  e = tandem::parse_tf_config(R"({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}})");
  CHECK(e.rank == 1);
  CHECK(e.rendezvous_host == "a");
  CHECK(e.rendezvous_port == 1);
  // Every task has the same cluster, whatever its own task.
  CHECK(tandem::parse_tf_config(R"({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}})")
            .cluster == e.cluster);
}

TEST_CASE("TF_CONFIG: every malformed value is one error naming the field", "[cpu][dist]") {
  auto msg = [](const std::string& json) { return invalid([&] { tandem::parse_tf_config(json); }); };
  const std::string task = R"("task": {"type": "worker", "index": 0})";
  CHECK_THAT(msg("not json"), Catch::Contains("TF_CONFIG: not JSON"));
  CHECK_THAT(msg("[1]"), Catch::Contains("must be a JSON object"));
  CHECK_THAT(msg("{" + task + "}"), Catch::Contains("'cluster' is missing"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:1"]}})"), Catch::Contains("'task' is missing"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:1"]}, "task": {"index": 0}})"),
             Catch::Contains("'task.type' is missing"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}})"),
             Catch::Contains("'task.index' is missing"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}})"),
             Catch::Contains("task.index 1 is out of range: cluster.worker lists 1 task(s)"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": -1}})"),
             Catch::Contains("task.index -1 is out of range"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}})"),
             Catch::Contains("task.index must be an integer"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}})"),
             Catch::Contains("cluster.chief lists 0 task(s)"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:1", "a:1"]}, )" + task + "}"),
             Catch::Contains("cluster.worker[1] repeats the address 'a:1' of cluster.worker[0]"));
  CHECK_THAT(msg(R"({"cluster": {"chief": ["a:1"], "worker": ["a:1"]}, )" + task + "}"),
             Catch::Contains("cluster.worker[0] repeats the address 'a:1' of cluster.chief[0]"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a"]}, )" + task + "}"),
             Catch::Contains("cluster.worker[0] is 'a', not host:port"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:0"]}, )" + task + "}"), Catch::Contains("not a number in 1..65535"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:65536"]}, )" + task + "}"), Catch::Contains("not a number in 1..65535"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:99999999999999999999"]}, )" + task + "}"),
             Catch::Contains("not a number in 1..65535"));
  CHECK_THAT(msg(R"({"cluster": {"worker": [":1"]}, )" + task + "}"), Catch::Contains("not host:port"));
  CHECK_THAT(msg(R"({"cluster": {"worker": [7]}, )" + task + "}"), Catch::Contains("cluster.worker[0] must be"));
  CHECK_THAT(msg(R"({"cluster": {"worker": "a:1"}, )" + task + "}"), Catch::Contains("cluster.worker must be a list"));
  CHECK_THAT(msg(R"({"cluster": {"chief": ["a:1", "b:1"]}, )" + task + "}"), Catch::Contains("there is one chief"));
  CHECK_THAT(msg(R"({"cluster": {}, )" + task + "}"), Catch::Contains("no 'chief' and no 'worker'"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, )" + task + "}"),
             Catch::Contains("Tandem has none"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:1"], "evaluator": ["b:1"]}, )" + task + "}"),
             Catch::Contains("cluster.evaluator is not supported"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}})"),
             Catch::Contains("task.type 'ps' is not supported"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "boss", "index": 0}})"),
             Catch::Contains("task.type is 'boss'"));
  CHECK_THAT(msg(R"({"cluster": {"master": ["a:1"]}, )" + task + "}"), Catch::Contains("unknown job 'cluster.master'"));
  CHECK_THAT(msg(R"({"cluster": {"worker": ["a:1"]}, "tsak": {}, )" + task + "}"),
             Catch::Contains("unknown key 'tsak'"));
}

TEST_CASE("torchrun's variables: rank, size and master, and each bad one named", "[cpu][dist]") {
  LaunchEnv e = tandem::parse_torchrun_env(vars({{"MASTER_ADDR", "10.0.0.1"},
                                                 {"MASTER_PORT", "29500"},
                                                 {"RANK", "3"},
                                                 {"WORLD_SIZE", "4"},
                                                 {"LOCAL_RANK", "1"}}));
  CHECK(e.source == "torchrun");
  CHECK(e.rank == 3);
  CHECK(e.size == 4);
  CHECK(e.rendezvous_host == "10.0.0.1");
  CHECK(e.rendezvous_port == 29500);
  CHECK_FALSE(tandem::torchrun_env_present(vars({{"PATH", "/bin"}})));
  CHECK(tandem::torchrun_env_present(vars({{"RANK", "0"}})));

  auto msg = [](std::map<std::string, std::string> m) { return invalid([&] { tandem::parse_torchrun_env(vars(m)); }); };
  const std::map<std::string, std::string> good = {
      {"MASTER_ADDR", "h1"}, {"MASTER_PORT", "29500"}, {"RANK", "0"}, {"WORLD_SIZE", "2"}};
  for (const char* v : {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"}) {
    auto m = good;
    m.erase(v);
    CHECK_THAT(msg(m), Catch::Contains(std::string(v) + " is not set"));
  }
  auto with = [&](const char* k, const char* v) {
    auto m = good;
    m[k] = v;
    return msg(m);
  };
  CHECK_THAT(with("RANK", "2"), Catch::Contains("RANK='2' is not a rank below WORLD_SIZE=2"));
  CHECK_THAT(with("RANK", "-1"), Catch::Contains("RANK='-1'"));
  CHECK_THAT(with("RANK", "one"), Catch::Contains("RANK='one'"));
  CHECK_THAT(with("WORLD_SIZE", "0"), Catch::Contains("WORLD_SIZE='0'"));
  CHECK_THAT(with("WORLD_SIZE", "2x"), Catch::Contains("WORLD_SIZE='2x'"));
  CHECK_THAT(with("MASTER_PORT", "70000"), Catch::Contains("MASTER_PORT='70000'"));
  CHECK_THAT(with("MASTER_PORT", ""), Catch::Contains("MASTER_PORT=''"));
  CHECK_THAT(with("MASTER_ADDR", ""), Catch::Contains("MASTER_ADDR is empty"));
  CHECK_THAT(with("LOCAL_RANK", "x"), Catch::Contains("LOCAL_RANK='x'"));
}

#ifdef TANDEM_HAVE_GLOO
TEST_CASE("a four-rank Gloo job on loopback: every collective, the tree's bits, node groups", "[cpu][dist]") {
  const int size = 4, port = free_port();
  // Not multiples of the ranks: uneven segments. The small one goes by recursive doubling, the large
  // one by halving and doubling (kTreeDoublingBytes).
  const size_t n = GENERATE(size_t(1001), size_t(50001));
  REQUIRE((n * sizeof(float) <= tandem::kTreeDoublingBytes) == (n == 1001));
  auto value = [](int rank, size_t i) {
    return std::ldexp(float((i * 2654435761u + rank * 40503u) % 1000) - 500.f, -7) * 1.1f;
  };
  std::vector<std::vector<float>> sums(size), trees(size), gathered(size), bcast(size);
  std::vector<std::vector<double>> dsums(size);
  std::vector<int> local(size), local_size(size), nodes(size);
  std::vector<std::string> errors(size);
  std::vector<std::thread> ranks;
  for (int r = 0; r < size; ++r)
    ranks.emplace_back([&, r] {
      try {
        LaunchEnv env = tandem::parse_torchrun_env(vars({{"MASTER_ADDR", "127.0.0.1"},
                                                         {"MASTER_PORT", std::to_string(port)},
                                                         {"RANK", std::to_string(r)},
                                                         {"WORLD_SIZE", std::to_string(size)}}));
        auto comm = tandem::make_gloo_communicator(env, 30);
        if (comm->rank() != r || comm->size() != size) throw std::runtime_error("wrong rank or size");
        local[r] = comm->local_rank();
        local_size[r] = comm->local_size();
        nodes[r] = comm->nodes();
        std::vector<float> x(n), t(n);
        for (size_t i = 0; i < n; ++i) x[i] = t[i] = value(r, i);
        comm->all_reduce_sum(x.data(), n);
        comm->tree_all_reduce_sum(t.data(), n);
        std::vector<double> d(n, double(r) + 0.25);
        comm->all_reduce_sum(d.data(), n);
        std::vector<float> b(7, float(r));
        comm->broadcast(b.data(), b.size() * sizeof(float), 2);
        int mine = 100 + r;
        std::vector<int> all(size);
        comm->all_gather(&mine, sizeof(int), all.data());
        comm->barrier();
        sums[r] = x;
        trees[r] = t;
        dsums[r] = d;
        bcast[r] = b;
        gathered[r].assign(all.begin(), all.end());
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : ranks) t.join();
  tandem::set_distributed_job(-1, {});
  for (int r = 0; r < size; ++r) REQUIRE(errors[r] == "");
  for (size_t i = 0; i < n; ++i) {
    // The tree, evaluated here: (0 + 1) + (2 + 3).
    const float want_tree = (value(0, i) + value(1, i)) + (value(2, i) + value(3, i));
    const float plain = value(0, i) + value(1, i) + value(2, i) + value(3, i);
    for (int r = 0; r < size; ++r) {
      REQUIRE(std::memcmp(&trees[r][i], &want_tree, sizeof(float)) == 0);
      REQUIRE(std::memcmp(&sums[r][i], &sums[0][i], sizeof(float)) == 0);  // every rank the same bits
      REQUIRE(std::fabs(sums[r][i] - plain) <= 1e-5f * (1 + std::fabs(plain)));
      REQUIRE(dsums[r][i] == 0.25 * 4 + 6);
    }
  }
  for (int r = 0; r < size; ++r) {
    CHECK(bcast[r] == std::vector<float>(7, 2.0f));
    CHECK(gathered[r] == std::vector<float>{100, 101, 102, 103});
    // One host: one node of four ranks, in rank order.
    CHECK(local[r] == r);
    CHECK(local_size[r] == 4);
    CHECK(nodes[r] == 1);
  }
}

TEST_CASE("the rendezvous: a missing worker is named, a taken port and a duplicate rank are refused", "[cpu][dist]") {
  const int port = free_port();
  // Only rank 0 of two starts: it waits for the timeout, then names rank 1.
  LaunchEnv env = tandem::parse_tf_config(R"({"cluster": {"chief": ["127.0.0.1:)" + std::to_string(port) +
                                          R"("], "worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}})");
  try {
    tandem::make_gloo_communicator(env, 1);
    FAIL("a job with a missing worker started");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Communication);
    CHECK_THAT(e.what(), Catch::Contains("1 of 2 ranks never reached the rendezvous") &&
                             Catch::Contains("worker 0 (127.0.0.1:1)"));
  }
  // The port is taken: one error naming the field.
  tandem::RendezvousServer holder(port, "test");
  const std::string taken = invalid([&] { tandem::make_gloo_communicator(env, 1); });
  CHECK_THAT(taken,
             Catch::Contains("TF_CONFIG chief 0") && Catch::Contains("cannot listen on port " + std::to_string(port)));
  // A second registration under one key is refused, and recorded for rank 0's check.
  tandem::RendezvousClient a("127.0.0.1", port, "test", std::chrono::steady_clock::now() + std::chrono::seconds(5));
  tandem::RendezvousClient b("127.0.0.1", port, "test", std::chrono::steady_clock::now() + std::chrono::seconds(5));
  CHECK(a.create("rank/1", "x"));
  CHECK_FALSE(b.create("rank/1", "y"));
  CHECK(holder.conflicts() == std::vector<std::string>{"rank/1"});
  CHECK(b.get("rank/1", std::chrono::milliseconds(100)) == "x");
  CHECK_THROWS_AS(b.get("never", std::chrono::milliseconds(100)), Error);
  CHECK(holder.wait_keys({"rank/1", "rank/2"}, std::chrono::steady_clock::now()) == std::vector<std::string>{"rank/2"});
}
#endif
