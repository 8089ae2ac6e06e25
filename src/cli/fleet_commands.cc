#include "cli/fleet_commands.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/common.h"
#include "fmt/core.h"

namespace drover::cli {

namespace v1 = ::drover::v1;

void FleetCommands::Add(CLI::App& app) {
  usage_ = app.add_subcommand(
      "usage", "Named resources in use, actual cost per tenant and type, tenants' dispatch shares");
  usage_->add_flag("--json", json_, "print JSON");
  agents_ = app.add_subcommand("agents", "List registered agents");
  agents_->add_flag("--json", json_, "print JSON");
}

int FleetCommands::Run(client::Client& c) {
  if (usage_->parsed()) return Usage(c);
  return Agents(c);
}

int FleetCommands::Usage(client::Client& c) {
  auto r = c.GetUsage();
  if (!r.ok()) return Fail(r.status());
  if (json_) {
    fmt::print("{}", Json(*r));
    return 0;
  }
  fmt::print("resources\n");
  if (r->resources().empty()) fmt::print("  (none configured)\n");
  for (const v1::ResourceUsage& u : r->resources()) {
    if (u.kind() == "semaphore") {
      fmt::print("  {:<20} semaphore     {:>6} of {:<6} in use   {:>5} waiting  {} taken\n",
                 u.name(), u.in_use(), u.capacity(), u.waiting(), u.acquired_total());
    } else {
      fmt::print(
          "  {:<20} token bucket  {:>8.1f} of {} tokens (refills {} ms)  {} waiting  {} taken\n",
          u.name(), u.available(), u.capacity(), u.refill_period_ms(), u.waiting(),
          u.acquired_total());
    }
  }
  fmt::print("cost (cost_factor x run seconds)\n");
  if (r->costs().empty()) fmt::print("  (nothing has run yet)\n");
  for (const v1::CostSum& s : r->costs()) {
    fmt::print("  tenant {:<16} type {:<16} {:>12.2f}  ({} attempts, {:.1f} s)\n", s.tenant(),
               s.type(), s.cost(), s.attempts(), s.run_seconds());
  }
  if (r->cost_by_tenant_size() > 1) {
    for (const auto& [tenant, cost] : r->cost_by_tenant()) {
      fmt::print("  tenant {:<16} {:>34.2f}\n", tenant, cost);
    }
  }
  fmt::print("tenants (fair share within a priority level)\n");
  if (r->tenants().empty()) fmt::print("  (no task queued yet)\n");
  for (const v1::TenantShare& t : r->tenants()) {
    fmt::print("  {:<20} weight {:<6g} ready {:<8} dispatched {}\n", t.tenant(), t.weight(),
               t.ready(), t.dispatched_total());
  }
  return 0;
}

int FleetCommands::Agents(client::Client& c) {
  auto r = c.ListAgents();
  if (!r.ok()) return Fail(r.status());
  if (json_) {
    fmt::print("{}", Json(*r));
    return 0;
  }
  if (r->agents().empty()) {
    fmt::print("no agents registered\n");
    return 0;
  }
  fmt::print("{:<12} {:<16} {:<20} {:>9} {:>6} {:<10} {:<9} {}\n", "ID", "NAME", "TYPES", "BUSY",
             "COST", "BREAKER", "STREAM", "SEEN");
  for (const v1::AgentStatus& a : r->agents()) {
    std::vector<std::string> types(a.types().begin(), a.types().end());
    fmt::print("{:<12} {:<16} {:<20} {:>9} {:>6g} {:<10} {:<9} {} ago\n", a.id(),
               a.name().empty() ? "-" : a.name().substr(0, 16), absl::StrJoin(types, ","),
               absl::StrCat(a.leased(), "/", a.max_concurrency()), a.cost_factor(), a.breaker(),
               a.connected() ? "open" : "closed", Age(a.last_seen_unix_ms()));
  }
  return 0;
}

}  // namespace drover::cli
