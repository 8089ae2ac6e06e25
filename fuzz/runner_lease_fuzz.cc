// The agent runner's handling of a lease (drover agent): whatever a lease holds (step
// names, types, tenants, NULs and newlines), every file it writes stays inside the work
// directory, the environment it sets is DROVER_* and the W3C TRACEPARENT only, and no entry
// carries a NUL or a newline.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "drover/v1/drover.pb.h"
#include "runner/agent_runner.h"

namespace {
void Require(bool ok) {
  if (!ok) std::abort();
}
bool Inside(const std::string& path, const std::string& dir) {
  if (path.rfind(dir + "/", 0) != 0) return false;
  const std::string rest = path.substr(dir.size() + 1);
  if (rest.find('\0') != std::string::npos) return false;
  size_t start = 0;
  while (start <= rest.size()) {
    size_t end = rest.find('/', start);
    if (end == std::string::npos) end = rest.size();
    const std::string seg = rest.substr(start, end - start);
    if (seg.empty() || seg == "." || seg == "..") return false;
    start = end + 1;
  }
  return true;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  drover::v1::TaskLease lease;
  if (!lease.ParseFromArray(data, static_cast<int>(size))) return 0;
  const std::string dir = "/work/agent";
  const drover::runner::TaskPlan plan =
      drover::runner::PlanTask(lease, dir, "127.0.0.1:7070", dir + "/messages");
  for (const auto& [path, content] : plan.files) Require(Inside(path, dir));
  Require(Inside(plan.checkpoint_file, dir));
  if (!plan.parents_dir.empty()) Require(Inside(plan.parents_dir, dir));
  for (const std::string& e : plan.env) {
    Require(e.rfind("DROVER_", 0) == 0 || e.rfind("TRACEPARENT=", 0) == 0);
    Require(e.find('=') != std::string::npos);
    Require(e.find('\0') == std::string::npos && e.find('\n') == std::string::npos);
  }
  return 0;
}
