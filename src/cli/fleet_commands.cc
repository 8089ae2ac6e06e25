#include "cli/fleet_commands.h"

#include <algorithm>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/common.h"
#include "fmt/core.h"
#include "google/protobuf/util/json_util.h"
#include "util/file.h"

namespace drover::cli {

namespace v1 = ::drover::v1;

void FleetCommands::Add(CLI::App& app) {
  usage_ = app.add_subcommand(
      "usage", "Named resources in use, actual cost per tenant and type, tenants' dispatch shares");
  usage_->add_flag("--json", json_, "print JSON");
  agents_ = app.add_subcommand("agents", "List registered agents");
  agents_->add_flag("--json", json_, "print JSON");
  pools_ = app.add_subcommand("pools", "Agent pools drover runs: agents by state, desired size");
  pools_->add_flag("--json", json_, "print JSON");
  decisions_ = pools_->add_subcommand("decisions", "The autoscaler's decisions for a pool");
  decisions_->add_option("pool", pool_, "pool name")->required();
  decisions_->add_option("--limit", limit_, "newest first (default 20, at most 1000)");
  decisions_->add_flag("--json", json_, "print JSON");
  apply_ = pools_->add_subcommand("apply", "Create a pool, or change one created this way");
  apply_->add_option("--file,-f", file_, "the pool as JSON (PoolConfig; '-' reads stdin)")
      ->required();
  delete_ = pools_->add_subcommand("delete", "Remove a pool created through the API");
  delete_->add_option("pool", pool_, "pool name")->required();
  delete_->add_flag("--force", force_,
                    "stop its agents at once (their tasks go back to the queue) instead of "
                    "draining them");
  stop_ = pools_->add_subcommand(
      "stop",
      "Stop one pool agent: it drains (finishes its tasks) unless --force; the pool "
      "starts another if it still wants one");
  stop_->add_option("member", pool_, "the member, <pool>/<n> as `drover pools` lists it")
      ->required();
  stop_->add_flag("--force", force_,
                  "stop it now: its running tasks go back to the queue (uncounted)");
  cluster_ = app.add_subcommand(
      "cluster", "The servers on this store (owner, standbys) and the leases on the work");
  cluster_->add_flag("--json", json_, "print JSON");
}

int FleetCommands::Run(client::Client& c) {
  if (usage_->parsed()) return Usage(c);
  if (decisions_->parsed()) return Decisions(c);
  if (apply_->parsed()) return Apply(c);
  if (delete_->parsed()) return Delete(c);
  if (stop_->parsed()) return Stop(c);
  if (cluster_->parsed()) return Cluster(c);
  if (pools_->parsed()) return Pools(c);
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

int FleetCommands::Pools(client::Client& c) {
  auto r = c.ListPools();
  if (!r.ok()) return Fail(r.status());
  if (json_) {
    fmt::print("{}", Json(*r));
    return 0;
  }
  if (r->pools().empty()) {
    fmt::print("no pools configured (see docs/pools.md)\n");
    return 0;
  }
  for (const v1::PoolStatus& p : r->pools()) {
    std::vector<std::string> types(p.types().begin(), p.types().end());
    fmt::print(
        "pool {} ({}; types {}): desired {} [min {}, max {}]  starting {}  idle {}  busy {}  "
        "draining {}\n",
        p.name(), p.runtime(), absl::StrJoin(types, ","), p.desired(), p.min(), p.max(),
        p.starting(), p.idle(), p.busy(), p.draining());
    fmt::print(
        "  pending {}  utilisation {:.0f}%  started {}  crashed {}  retired {}  idle-stopped {}  "
        "unhealthy {}  stopped {}  agent-hours {:.3f}  spend {:.4f}  burn {:.2f}/h{}\n",
        p.pending(), p.utilization() * 100, p.started_total(), p.crashed_total(), p.retired_total(),
        p.idle_stopped_total(), p.unhealthy_total(), p.stopped_total(), p.agent_hours(), p.spend(),
        p.burn_rate(),
        p.hourly_budget() > 0 ? fmt::format(" (budget {:g}/h)", p.hourly_budget()) : "");
    auto latency = [](const v1::LatencySummary& l) {
      return l.count() == 0 ? std::string("-")
                            : fmt::format("mean {:.0f} ms, p50 {:.0f} ms, p95 {:.0f} ms (n={})",
                                          l.mean_ms(), l.p50_ms(), l.p95_ms(), l.count());
    };
    fmt::print("  time to acquire an agent: warm {}; cold {}.  agent start: {}\n",
               latency(p.acquire_warm()), latency(p.acquire_cold()), latency(p.agent_start()));
    if (!p.mode().empty() && p.mode() != "reactive") {
      std::string line = fmt::format("  mode {}: fallbacks {}  trainings {}", p.mode(),
                                     p.fallbacks_total(), p.model_fits_total());
      if (p.mode() == "shadow") {
        line += fmt::format("  answers differing {}", p.shadow_disagreements_total());
      } else {
        line += fmt::format("  saved {:.2f} agent-hours vs reactive", p.saved_agent_hours());
      }
      for (const v1::ForecastHorizon& h : p.forecast().horizons()) {
        line += fmt::format("  {}m {:.1f}/min ({:.2f})", h.minutes(), h.p50(), h.confidence());
      }
      if (!p.model_error().empty()) line += "  model error: " + p.model_error();
      fmt::print("{}  (drover forecast {})\n", line, p.name());
    }
    for (const v1::PoolMember& m : p.members()) {
      fmt::print("  {:<16} pid {:<8} {:<9} agent {:<12} leased {:<3} attempts {}{}\n", m.id(),
                 m.pid(), m.state(), m.agent_id(), m.leased(), m.attempts(),
                 m.health_failures() > 0
                     ? fmt::format("  health check failed {}x", m.health_failures())
                     : "");
    }
  }
  return 0;
}

int FleetCommands::Apply(client::Client& c) {
  std::string text;
  if (file_ == "-") {
    std::stringstream ss;
    ss << std::cin.rdbuf();
    text = ss.str();
  } else {
    std::optional<std::string> read = ReadWholeFile(file_);
    if (!read) return Fail(absl::NotFoundError(absl::StrCat("--file: cannot read ", file_)));
    text = std::move(*read);
  }
  v1::ApplyPoolRequest req;
  google::protobuf::util::JsonParseOptions o;
  o.ignore_unknown_fields = false;
  if (auto st = google::protobuf::util::JsonStringToMessage(text, req.mutable_pool(), o);
      !st.ok()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--file: ", file_, ": ", st.message().as_string())));
  }
  if (absl::Status st = c.ApplyPool(req); !st.ok()) return Fail(st);
  fmt::print("pool {} applied\n", req.pool().name());
  return 0;
}

int FleetCommands::Delete(client::Client& c) {
  v1::DeletePoolRequest req;
  req.set_name(pool_);
  req.set_force(force_);
  if (absl::Status st = c.DeletePool(req); !st.ok()) return Fail(st);
  fmt::print("pool {} removed: its agents {}\n", pool_,
             force_ ? "are being stopped" : "drain and stop");
  return 0;
}

int FleetCommands::Stop(client::Client& c) {
  v1::StopPoolAgentRequest req;
  req.set_member(pool_);
  req.set_force(force_);
  if (absl::Status st = c.StopPoolAgent(req); !st.ok()) return Fail(st);
  fmt::print("{} {}\n", pool_,
             force_ ? "is being stopped; its tasks go back to the queue"
                    : "drains: it takes no new task and stops when its last one ends");
  return 0;
}

int FleetCommands::Decisions(client::Client& c) {
  v1::ListScalingDecisionsRequest req;
  req.set_pool(pool_);
  req.set_limit(limit_);
  auto r = c.ListScalingDecisions(req);
  if (!r.ok()) return Fail(r.status());
  if (json_) {
    fmt::print("{}", Json(*r));
    return 0;
  }
  fmt::print("{:<24} {:>7} {:>8} {:>7} {:>8} {:>10} {:>7}  {}\n", "AT", "CURRENT", "METRIC",
             "TARGET", "PROPOSED", "STABILIZED", "DESIRED", "RULE");
  for (const v1::ScalingDecisionRecord& d : r->decisions()) {
    fmt::print("{:<24} {:>7} {:>8.2f} {:>7g} {:>8} {:>10} {:>7}  {}\n",
               absl::FormatTime("%Y-%m-%d %H:%M:%E3S", absl::FromUnixMillis(d.at_unix_ms()),
                                absl::UTCTimeZone()),
               d.current(), d.metric(), d.target(), d.proposed(), d.stabilized(), d.desired(),
               d.rule());
    if (d.mode().empty()) continue;
    // Modes shadow and predictive: both answers, then the forecast it used.
    std::string line =
        absl::StrCat("    ", d.mode(), ": reactive ", d.reactive(), ", predictive ", d.predictive(),
                     d.applied_predictive() ? " (applied)" : "", ", ", d.predictive_rule(),
                     absl::StrFormat(", confidence %.2f", d.confidence()));
    for (const v1::ForecastHorizon& h : d.forecast()) {
      absl::StrAppend(&line, absl::StrFormat("; %dm %.1f [%.1f-%.1f]/min", h.minutes(), h.mean(),
                                             h.p10(), h.p90()));
    }
    if (!d.weights().empty()) {
      std::vector<std::string> w;
      for (const auto& [model, weight] : d.weights()) {
        w.push_back(absl::StrFormat("%s %.2f", model, weight));
      }
      std::sort(w.begin(), w.end());
      absl::StrAppend(&line, "; weights ", absl::StrJoin(w, ", "));
    }
    fmt::print("{}\n", line);
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

// `drover cluster`: who serves this store and who owns the work.
int FleetCommands::Cluster(client::Client& c) {
  auto r = c.GetCluster();
  if (!r.ok()) return Fail(r.status());
  if (json_) {
    fmt::print("{}", Json(*r));
    return 0;
  }
  auto secs = [](int64_t ms) { return absl::StrFormat("%.1fs", static_cast<double>(ms) / 1000); };
  fmt::print("store {}\n\n", r->store());
  fmt::print("{:<36} {:<22} {:<8} {}\n", "SERVER", "ADDRESS", "ROLE", "HEARTBEAT");
  for (const v1::ClusterServer& s : r->servers()) {
    fmt::print("{:<36} {:<22} {:<8} {}{}\n", s.id(), s.address(), s.role(),
               s.heartbeat_age_ms() > 0 ? secs(s.heartbeat_age_ms()) + " ago" : "-",
               s.id() == r->self() ? "  (answered this)" : "");
  }
  if (r->leases_size() == 0) {
    fmt::print("\nno leases: one server owns its store (SQLite or memory)\n");
    return 0;
  }
  fmt::print("\n{:<14} {:<36} {:>6} {:>11} {:>10}\n", "LEASE", "OWNER", "EPOCH", "EXPIRES IN",
             "RENEWED");
  for (const v1::ClusterLease& l : r->leases()) {
    fmt::print("{:<14} {:<36} {:>6} {:>11} {:>10}\n", l.name(), l.owner(), l.epoch(),
               l.expires_in_ms() < 0 ? "expired" : secs(l.expires_in_ms()),
               secs(l.renewed_age_ms()) + " ago");
  }
  return 0;
}

}  // namespace drover::cli
