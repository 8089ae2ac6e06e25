// What the gate costs per call, without the network: authenticating a token among many
// (a SHA-256 and a hash-map lookup), the access rule, and the audit record's objects. The
// end-to-end figure with auth on and off is bench/run_auth.sh.
//   auth_bench [--tokens N] [--calls N] [--threads N]
#include <atomic>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "api/gate.h"
#include "auth/access.h"
#include "auth/tokens.h"
#include "fmt/core.h"

ABSL_FLAG(int, tokens, 10'000, "live tokens in the registry");
ABSL_FLAG(int, calls, 2'000'000, "calls per thread");
ABSL_FLAG(int, threads, 2, "threads calling at once");

using namespace drover;

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auth::TokenRegistry reg;
  auth::Caller root = auth::Caller::Unrestricted("bench");
  std::vector<std::string> secrets;
  for (int i = 0; i < absl::GetFlag(FLAGS_tokens); ++i) {
    v1::CreateTokenRequest req;
    req.set_name(fmt::format("t{}", i));
    v1::Grant* g = req.add_grants();
    g->set_tenant(fmt::format("tenant-{}", i % 100));
    g->set_role(v1::ROLE_SUBMITTER);
    secrets.push_back(reg.Create(root, req, 0)->secret);
  }
  const auth::Rule* rule = auth::FindRule("drover.v1.TaskService/SubmitTask");
  const int calls = absl::GetFlag(FLAGS_calls);
  const int threads = absl::GetFlag(FLAGS_threads);
  std::atomic<int64_t> ok{0};
  auto run = [&](int t) {
    v1::SubmitTaskRequest req;
    req.mutable_task()->set_type("summarize");
    req.mutable_task()->set_idempotency_key("k-123456");
    int64_t n = 0;
    for (int i = 0; i < calls; ++i) {
      const std::string& s = secrets[(static_cast<size_t>(i) * 7919 + t) % secrets.size()];
      auto p = reg.Authenticate(s, 1000);
      if (!p.ok()) continue;
      auth::Caller c(*p);
      req.mutable_task()->set_tenant((*p)->grants[0].tenant());
      if (auth::Check(c, *rule, &req).ok()) ++n;
    }
    ok += n;
  };
  const absl::Time start = absl::Now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) ts.emplace_back(run, t);
  for (auto& t : ts) t.join();
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  const double total = static_cast<double>(calls) * threads;
  fmt::print(
      "auth: {:.0f} checks (token among {} + access rule) in {:.2f} s on {} threads = {:.2f} us "
      "per check per thread, {:.0f} checks/s; {} allowed\n",
      total, secrets.size(), secs, threads, secs * threads / total * 1e6, total / secs, ok.load());
  // The audit record's objects, by reflection: what each state-changing call adds.
  v1::SubmitTaskRequest req;
  req.mutable_task()->set_type("summarize");
  req.mutable_task()->set_tenant("tenant-1");
  req.mutable_task()->set_idempotency_key("k-123456");
  const absl::Time s2 = absl::Now();
  size_t sink = 0;
  for (int i = 0; i < calls / 4; ++i) sink += api::AuditObjects(req).size();
  const double secs2 = absl::ToDoubleSeconds(absl::Now() - s2);
  fmt::print("audit objects: {:.2f} us per record ({})\n", secs2 / (calls / 4) * 1e6, sink > 0);
  return ok.load() == static_cast<int64_t>(total) ? 0 : 1;
}
