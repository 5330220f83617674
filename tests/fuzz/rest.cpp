// A REST request (TF Serving's API v1, KServe's v2 with JSON or binary tensors, the metrics page)
// through RestHandler, the same function the HTTP server calls, once on a server without batching
// and once with. The input is the request as text:
//   METHOD PATH\n  (header-name: value\n)*  \n  BODY
// Every reply must be a protocol answer, not a crash: a status from TF Serving's table, 500 never
// (that is an exception the handler did not expect), an error body that is JSON with "error";
// then a good request must still get the right answer.
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "fuzz_target.h"
#include "server_rig.h"

namespace {

tandem::serve::HttpRequest parse_request(std::string_view in) {
  tandem::serve::HttpRequest r;
  auto line = [&]() {
    const size_t end = in.find('\n');
    std::string_view l = in.substr(0, end);
    in = end == std::string_view::npos ? std::string_view() : in.substr(end + 1);
    return l;
  };
  const std::string_view first = line();
  const size_t space = first.find(' ');
  r.method = std::string(first.substr(0, space));
  r.path = space == std::string_view::npos ? "/" : std::string(first.substr(space + 1));
  for (std::string_view h = line(); !h.empty(); h = line()) {
    const size_t colon = h.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name(h.substr(0, colon));
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string_view value = h.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    r.headers[name] = std::string(value);
  }
  r.body = std::string(in);
  return r;
}

void check_reply(const tandem::serve::HttpReply& reply, const tandem::serve::HttpRequest& request) {
  const int s = reply.status;
  const bool known = s == 200 || s == 204 || s == 400 || s == 403 || s == 404 || s == 405 || s == 409 ||
                     s == 412 || s == 413 || s == 415 || s == 429 || s == 501 || s == 503 || s == 504;
  bool ok = known;
  if (ok && s >= 400 && reply.content_type == "application/json") {
    const nlohmann::json body = nlohmann::json::parse(reply.body, nullptr, false);
    ok = body.is_object() && body.contains("error") && body["error"].is_string() &&
         !body["error"].get<std::string>().empty();
  }
  if (!ok) {
    std::fprintf(stderr, "\n==fuzz== rest: %s %s got %d %s\n", request.method.c_str(), request.path.c_str(), s,
                 reply.body.substr(0, 2000).c_str());
    std::abort();
  }
}

}  // namespace

TANDEM_FUZZ_TARGET(rest) {
  const tandem::serve::HttpRequest request = parse_request({reinterpret_cast<const char*>(data), size});
  for (const tandem::fuzz::ServerRig* rig : {&tandem::fuzz::plain_rig(), &tandem::fuzz::batching_rig()}) {
    tandem::serve::HttpReply reply;
    tandem::fuzz::expect_clean("rest", [&] { reply = rig->rest->handle(request, tandem::serve::Clock::now()); });
    check_reply(reply, request);
    if (tandem::fuzz::verbose()) std::fprintf(stderr, "  %d %s\n", reply.status, reply.body.substr(0, 200).c_str());
    rig->check_still_serving("a REST request");
  }
  return 0;
}
