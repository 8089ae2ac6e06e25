// The engine's queues and who gets what: fair queueing between tenants within a priority
// level, placement policies, cost budgets and actual cost, named resources (semaphores and
// token buckets), and preemption of low work for critical tasks. See engine.h for the
// contract and docs/scheduling.md for the rules as users see them.
#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/engine.h"
#include "core/names.h"
#include "google/protobuf/util/json_util.h"

namespace drover::core {
namespace {

constexpr double kEpsilon = 1e-9;
constexpr int kMaxResourceNeeds = 16;

bool IsLowWork(const v1::Task& t) {
  return t.spec().priority() == v1::PRIORITY_LOW || t.spec().priority() == v1::PRIORITY_BACKGROUND;
}

int64_t NeedOf(const v1::TaskSpec& spec, const std::string& name) {
  for (const v1::ResourceNeed& n : spec.resources()) {
    if (n.name() == name) return n.amount();
  }
  return 0;
}

std::string Amount(double v) { return absl::StrCat(std::round(v * 1000) / 1000); }

}  // namespace

std::string PlacementName(Placement p) {
  switch (p) {
    case Placement::kLeastLoaded:
      return "least_loaded";
    case Placement::kRoundRobin:
      return "round_robin";
    case Placement::kRandom:
      return "random";
    case Placement::kCost:
      return "cost";
  }
  return "?";
}

std::optional<Placement> ParsePlacement(const std::string& name) {
  for (Placement p :
       {Placement::kLeastLoaded, Placement::kRoundRobin, Placement::kRandom, Placement::kCost}) {
    if (PlacementName(p) == name) return p;
  }
  return std::nullopt;
}

std::string ResourceKindName(ResourceSpec::Kind k) {
  return k == ResourceSpec::Kind::kSemaphore ? "semaphore" : "token_bucket";
}

// ---------------------------------------------------------------------------------------
// Queues: per type, per priority level, per tenant; tenants in fair order

void Engine::InsertReady(TypeQueue& q, Entry& e) {
  Level& level = LevelOf(q, e);
  const std::string& tenant = e.task.spec().tenant();
  auto [it, fresh] = level.tenants.try_emplace(tenant);
  TenantQueue& tq = it->second;
  if (fresh) {
    tq.tenant = tenant;
    tq.ordinal = next_tenant_ordinal_++;
    auto w = options_.tenant_weights.find(tenant);
    tq.weight = w == options_.tenant_weights.end() ? 1.0 : w->second;
  }
  if (tq.ready.empty()) {
    // A tenant that was idle starts from the level's virtual clock: no credit is saved up
    // while it had nothing queued.
    tq.vtime = std::max(tq.vtime, level.vclock);
    level.order.emplace(tq.vtime, tq.ordinal, &tq);
  }
  tq.ready.insert(e.key);
  q.ready++;
}

bool Engine::EraseReady(TypeQueue& q, Entry& e, bool dispatched) {
  // (A task restored as READY is not queued until recovery reaches it.)
  if (e.key.id != e.task.id() || e.key.priority() < 1 || e.key.priority() > 5) return false;
  Level& level = LevelOf(q, e);
  auto it = level.tenants.find(e.task.spec().tenant());
  if (it == level.tenants.end()) return false;
  TenantQueue& tq = it->second;
  if (tq.ready.erase(e.key) == 0) return false;
  q.ready--;
  if (!dispatched) {
    if (tq.ready.empty()) level.order.erase({tq.vtime, tq.ordinal, &tq});
    return true;
  }
  // Start-time fair queueing: the dispatch moves the level's clock to this tenant's start
  // time and the tenant's next start 1/weight later.
  tq.dispatched++;
  auto node = level.order.extract({tq.vtime, tq.ordinal, &tq});
  level.vclock = std::max(level.vclock, tq.vtime);
  tq.vtime += 1.0 / tq.weight;
  if (!tq.ready.empty() && !node.empty()) {
    node.value() = {tq.vtime, tq.ordinal, &tq};
    level.order.insert(std::move(node));
  }
  return true;
}

void Engine::TrimReadyOrder(TypeQueue& q) {
  auto live = [&](const std::pair<TaskId, uint32_t>& r) {
    const Entry* e = Find(r.first);
    return e != nullptr && e->gen == r.second && e->task.state() == v1::TASK_STATE_READY;
  };
  while (!q.ready_order.empty() && !live(q.ready_order.front())) q.ready_order.pop_front();
  // Entries behind a long-waiting front go stale as their tasks are dispatched: drop them
  // whenever the deque doubled, so it stays within about twice the tasks waiting.
  if (q.ready_order.size() > q.compact_at) {
    std::erase_if(q.ready_order, [&](const auto& r) { return !live(r); });
    q.compact_at = std::max<size_t>(1024, 2 * q.ready_order.size());
  }
}

std::map<std::string, absl::Duration> Engine::OldestReadyAges() {
  std::map<std::string, absl::Duration> out;
  const int64_t t = now_ms();
  for (auto& [type, q] : queues_) {
    TrimReadyOrder(q);
    if (q.ready_order.empty()) continue;
    const Entry* e = Find(q.ready_order.front().first);
    out[type] = absl::Milliseconds(std::max<int64_t>(0, t - e->task.updated_unix_ms()));
  }
  return out;
}

const Engine::QueueKey* Engine::Head(const TypeQueue& q) const {
  if (q.ready == 0) return nullptr;
  for (const Level& level : q.levels) {
    if (level.order.empty()) continue;
    const TenantQueue* tq = std::get<2>(*level.order.begin());
    return &*tq->ready.begin();
  }
  return nullptr;
}

void Engine::Enqueue(Entry& e) {
  const v1::TaskSpec& s = e.task.spec();
  const int priority = static_cast<int>(
      s.priority() == v1::PRIORITY_UNSPECIFIED ? v1::PRIORITY_NORMAL : s.priority());
  e.key = QueueKey{
      QueueKey::Rank(priority, options_.critical_path_first ? e.Lc().critical_path_ms : 0),
      s.deadline_unix_ms() > 0 ? s.deadline_unix_ms() : std::numeric_limits<int64_t>::max(),
      e.task.id()};
  e.parked = Entry::Parked::kNo;
  TypeQueue& q = queues_[s.type()];
  TrimReadyOrder(q);
  q.ready_order.emplace_back(e.task.id(), e.gen);
  InsertReady(q, e);
  queue_depths_[{s.type(), e.key.priority()}]++;
  DispatchType(s.type());
  if (e.key.priority() == v1::PRIORITY_CRITICAL && options_.preempt_after > absl::ZeroDuration() &&
      e.task.state() == v1::TASK_STATE_READY && e.parked == Entry::Parked::kNo) {
    Arm(TimerKind::kPreempt, e.task.id(), e.gen, now() + options_.preempt_after);
  }
}

void Engine::RemoveFromReady(Entry& e, bool dispatched) {
  if (e.task.state() != v1::TASK_STATE_READY) return;
  auto it = queues_.find(e.task.spec().type());
  if (it == queues_.end()) return;
  TypeQueue& q = it->second;
  switch (e.parked) {
    case Entry::Parked::kNo:
      if (!EraseReady(q, e, dispatched)) return;
      break;
    case Entry::Parked::kResource:
      for (const v1::ResourceNeed& n : e.task.spec().resources()) {
        if (auto r = resources_.find(n.name()); r != resources_.end())
          r->second.waiters.erase(e.key);
      }
      break;
    case Entry::Parked::kBudget:
      for (auto b = q.over_budget.begin(); b != q.over_budget.end(); ++b) {
        if (b->second.id == e.task.id()) {
          q.over_budget.erase(b);
          break;
        }
      }
      break;
  }
  e.parked = Entry::Parked::kNo;
  if (!e.task.waiting_for().empty()) e.task.clear_waiting_for();
  auto d = queue_depths_.find({e.task.spec().type(), e.key.priority()});
  if (d != queue_depths_.end() && --d->second == 0) queue_depths_.erase(d);
  if (!dispatched) WakeOthers(e, "");
}

void Engine::WakeOthers(const Entry& e, const std::string& except) {
  // A task woken for a resource may leave its queue without taking it (canceled, expired,
  // or held back by another resource): the next waiter gets the chance instead.
  for (const v1::ResourceNeed& n : e.task.spec().resources()) {
    if (n.name() == except) continue;
    auto r = resources_.find(n.name());
    if (r != resources_.end() && !r->second.waiters.empty()) WakeResourceWaiters(n.name());
  }
}

void Engine::Unpark(Entry& e) {
  TypeQueue& q = queues_[e.task.spec().type()];
  if (e.parked == Entry::Parked::kResource) {
    for (const v1::ResourceNeed& n : e.task.spec().resources()) {
      if (auto r = resources_.find(n.name()); r != resources_.end()) r->second.waiters.erase(e.key);
    }
  }
  // (kBudget: the caller took it out of over_budget.)
  e.parked = Entry::Parked::kNo;
  e.task.clear_waiting_for();
  InsertReady(q, e);  // with its old key: it keeps its place in line
}

// ---------------------------------------------------------------------------------------
// Dispatch and placement

void Engine::DispatchType(const std::string& type) {
  auto qit = queues_.find(type);
  if (qit == queues_.end()) return;
  TypeQueue& q = qit->second;
  while (q.ready > 0 && !q.idle_agents.empty()) {
    Entry* e = Find(Head(q)->id);
    if (!ResourcesReadyOrPark(q, *e)) continue;
    AgentInfo* agent = PickAgent(q, *e);
    if (agent == nullptr) {
      if (e->task.spec().cost_budget() <= 0) break;  // (not expected: an idle agent exists)
      ParkOverBudget(q, *e);
      continue;
    }
    Lease(*e, *agent);
  }
}

void Engine::FillAgent(AgentInfo& agent) {
  const bool woke = WakeOverBudget(agent);
  while (agent.stream_open && !agent.draining &&
         (agent.max_uses == 0 || agent.attempts_started < agent.max_uses) &&
         static_cast<int>(agent.leased.size()) < agent.max_concurrency && BreakerAllows(agent)) {
    // The best head among the agent's types: priority, then the type's own order.
    const QueueKey* best = nullptr;
    TypeQueue* best_q = nullptr;
    for (const std::string& type : agent.types) {
      auto it = queues_.find(type);
      if (it == queues_.end()) continue;
      const QueueKey* head = Head(it->second);
      if (head != nullptr && (best == nullptr || *head < *best)) {
        best = head;
        best_q = &it->second;
      }
    }
    if (best == nullptr) break;
    Entry& e = *Find(best->id);
    if (!ResourcesReadyOrPark(*best_q, e)) continue;
    if (!Affordable(e, agent)) {
      // Dearer than its budget allows: another idle agent may do; else it waits for one.
      AgentInfo* other = PickAgent(*best_q, e);
      if (other != nullptr && other != &agent) {
        Lease(e, *other);
      } else {
        ParkOverBudget(*best_q, e);
      }
      continue;
    }
    Lease(e, agent);
  }
  RefreshIdle(agent);
  if (woke) {
    // Tasks woken for this agent that it had no room for: other idle agents, or back to
    // waiting for an affordable one.
    for (const std::string& type : agent.types) DispatchType(type);
  }
}

bool Engine::Affordable(const Entry& e, const AgentInfo& agent) const {
  const double budget = e.task.spec().cost_budget();
  if (budget <= 0) return true;
  const double expected_s = static_cast<double>(ExpectedDurationMs(e.task.spec())) / 1000.0;
  return agent.cost_factor * expected_s <= budget - e.task.cost() + kEpsilon;
}

AgentInfo* Engine::PickAgent(TypeQueue& q, const Entry& e) {
  const v1::TaskSpec& spec = e.task.spec();
  Placement placement = options_.defaults.placement;
  if (auto t = options_.per_type.find(spec.type()); t != options_.per_type.end()) {
    placement = t->second.placement;
  }
  const bool budgeted = spec.cost_budget() > 0;
  const double expected_s = budgeted || placement == Placement::kCost
                                ? static_cast<double>(ExpectedDurationMs(spec)) / 1000.0
                                : 0.0;
  const double remaining = spec.cost_budget() - e.task.cost();
  auto usable = [&](const AgentInfo& a) {
    return !budgeted || a.cost_factor * expected_s <= remaining + kEpsilon;
  };
  auto load = [](const AgentInfo& a) {
    return static_cast<double>(a.leased.size()) / a.max_concurrency;
  };
  AgentInfo* best = nullptr;
  switch (placement) {
    case Placement::kLeastLoaded: {
      double best_load = 2;
      for (AgentId id : q.idle_agents) {
        AgentInfo& a = agents_.find(id)->second;
        if (!usable(a)) continue;
        const double l = load(a);
        if (l < best_load) {
          best = &a;
          best_load = l;
          if (l == 0) break;
        }
      }
      break;
    }
    case Placement::kRoundRobin: {
      // The first usable agent after the last one placed, wrapping around.
      auto start = q.idle_agents.upper_bound(q.last_placed);
      for (int pass = 0; pass < 2 && best == nullptr; ++pass) {
        auto from = pass == 0 ? start : q.idle_agents.begin();
        auto to = pass == 0 ? q.idle_agents.end() : start;
        for (auto it = from; it != to; ++it) {
          AgentInfo& a = agents_.find(*it)->second;
          if (usable(a)) {
            best = &a;
            break;
          }
        }
      }
      if (best != nullptr) q.last_placed = best->id;
      break;
    }
    case Placement::kRandom: {
      std::vector<AgentInfo*> candidates;
      for (AgentId id : q.idle_agents) {
        AgentInfo& a = agents_.find(id)->second;
        if (usable(a)) candidates.push_back(&a);
      }
      if (!candidates.empty()) {
        std::uniform_int_distribution<size_t> pick(0, candidates.size() - 1);
        best = candidates[pick(rng_)];
      }
      break;
    }
    case Placement::kCost: {
      // Score: cost_factor x expected duration x (1 + utilisation); ties to the lowest id.
      double best_score = std::numeric_limits<double>::infinity();
      const double d = std::max(expected_s, 1e-6);
      for (AgentId id : q.idle_agents) {
        AgentInfo& a = agents_.find(id)->second;
        if (!usable(a)) continue;
        const double score = a.cost_factor * d * (1 + load(a));
        if (score < best_score) {
          best = &a;
          best_score = score;
        }
      }
      break;
    }
  }
  return best;
}

void Engine::ParkOverBudget(TypeQueue& q, Entry& e) {
  EraseReady(q, e, false);
  const double remaining = e.task.spec().cost_budget() - e.task.cost();
  const double expected_s = static_cast<double>(ExpectedDurationMs(e.task.spec())) / 1000.0;
  // The dearest agent it could afford: released when an agent at most that dear is free.
  const double max_factor =
      expected_s > 0 ? remaining / expected_s : std::numeric_limits<double>::infinity();
  q.over_budget.emplace(-max_factor, e.key);
  e.parked = Entry::Parked::kBudget;
  e.task.set_waiting_for(absl::StrCat("an agent within its remaining cost budget of ",
                                      Amount(remaining), " (expected run ", Amount(expected_s),
                                      " s: cost_factor at most ", Amount(max_factor), ")"));
  probe_.budget_waits++;
}

void Engine::RecheckOverBudget(const std::string& type) {
  auto it = queues_.find(type);
  if (it == queues_.end() || it->second.over_budget.empty()) return;
  TypeQueue& q = it->second;
  while (!q.over_budget.empty()) {
    Entry* e = Find(q.over_budget.begin()->second.id);
    q.over_budget.erase(q.over_budget.begin());
    if (e != nullptr) Unpark(*e);
  }
  DispatchType(type);  // those still beyond every idle agent park again
}

bool Engine::WakeOverBudget(const AgentInfo& agent) {
  bool woke = false;
  for (const std::string& type : agent.types) {
    auto it = queues_.find(type);
    if (it == queues_.end()) continue;
    TypeQueue& q = it->second;
    while (!q.over_budget.empty() &&
           -q.over_budget.begin()->first + kEpsilon >= agent.cost_factor) {
      Entry* e = Find(q.over_budget.begin()->second.id);
      q.over_budget.erase(q.over_budget.begin());
      if (e != nullptr) Unpark(*e);
      woke = true;
    }
  }
  return woke;
}

// ---------------------------------------------------------------------------------------
// Named resources

double Engine::TokensAt(const ResourceState& r, absl::Time t) {
  if (t <= r.refilled_at) return r.tokens;
  const double added = static_cast<double>(r.spec.capacity) *
                       absl::FDivDuration(t - r.refilled_at, r.spec.refill_period);
  return std::min(static_cast<double>(r.spec.capacity), r.tokens + added);
}

void Engine::Refill(ResourceState& r) {
  if (r.spec.kind != ResourceSpec::Kind::kTokenBucket) return;
  const absl::Time t = now();
  r.tokens = TokensAt(r, t);
  r.refilled_at = std::max(r.refilled_at, t);
}

bool Engine::ResourcesReadyOrPark(TypeQueue& q, Entry& e) {
  const v1::TaskSpec& spec = e.task.spec();
  if (spec.resources_size() == 0) return true;
  for (const v1::ResourceNeed& n : spec.resources()) {
    auto it = resources_.find(n.name());
    if (it == resources_.end()) continue;  // no longer configured: no limit
    ResourceState& r = it->second;
    if (n.amount() > r.spec.capacity) {
      // Possible only when the configuration shrank across a restart.
      Finish(e, v1::TASK_STATE_DEAD,
             absl::StrCat("resources: needs ", n.amount(), " of \"", n.name(),
                          "\", whose capacity is now ", r.spec.capacity));
      return false;
    }
    double available;
    if (r.spec.kind == ResourceSpec::Kind::kSemaphore) {
      available = static_cast<double>(r.spec.capacity - r.in_use);
    } else {
      Refill(r);
      available = r.tokens;
    }
    // Tasks already waiting for it go first (a large need is not overtaken).
    const bool queued_behind = !r.waiters.empty() && *r.waiters.begin() < e.key;
    if (!queued_behind && static_cast<double>(n.amount()) <= available + kEpsilon) continue;
    EraseReady(q, e, false);
    r.waiters.insert(e.key);
    e.parked = Entry::Parked::kResource;
    e.task.set_waiting_for(absl::StrCat("resource \"", n.name(), "\" (needs ", n.amount(), ", ",
                                        Amount(available), " of ", r.spec.capacity, " available)"));
    probe_.resource_waits++;
    WakeOthers(e, n.name());
    if (r.spec.kind == ResourceSpec::Kind::kTokenBucket && r.waiters.begin()->id == e.task.id()) {
      ArmRefill(r, static_cast<double>(n.amount()) - available);
    }
    return false;
  }
  // Everything is there: Lease takes it.
  return true;
}

void Engine::ArmRefill(ResourceState& r, double missing) {
  // When the bucket will hold what the first waiter misses now.
  const absl::Duration wait =
      r.spec.refill_period * (missing / static_cast<double>(r.spec.capacity));
  const absl::Time at = now() + absl::Ceil(wait, absl::Milliseconds(1));
  if (r.wakeup > now() && r.wakeup <= at) return;  // an earlier wake-up is armed
  r.wakeup = at;
  Arm(TimerKind::kRefill, r.index, 0, at);
}

void Engine::AcquireResources(const Entry& e) {
  for (const v1::ResourceNeed& n : e.task.spec().resources()) {
    auto it = resources_.find(n.name());
    if (it == resources_.end()) continue;
    ResourceState& r = it->second;
    if (r.spec.kind == ResourceSpec::Kind::kSemaphore) {
      r.in_use += n.amount();
    } else {
      Refill(r);
      r.tokens -= static_cast<double>(n.amount());
    }
    r.acquired_total++;
  }
}

void Engine::ReleaseResources(const Entry& e) {
  const v1::TaskSpec& spec = e.task.spec();
  if (spec.resources_size() == 0) return;
  std::vector<std::string> freed;
  for (const v1::ResourceNeed& n : spec.resources()) {
    auto it = resources_.find(n.name());
    if (it == resources_.end() || it->second.spec.kind != ResourceSpec::Kind::kSemaphore) continue;
    it->second.in_use -= n.amount();
    freed.push_back(n.name());
  }
  for (const std::string& name : freed) WakeResourceWaiters(name);
}

void Engine::WakeResourceWaiters(const std::string& name) {
  auto it = resources_.find(name);
  if (it == resources_.end()) return;
  ResourceState& r = it->second;
  // Woken tasks still in a queue count as holding their need (no herd of waiters is woken
  // for one free unit). One that parked elsewhere (another resource) or left the queue
  // gives its share back to the next round.
  std::vector<TaskId> woken;
  for (int round = 0; round < 64; ++round) {
    Refill(r);
    double available = r.spec.kind == ResourceSpec::Kind::kSemaphore
                           ? static_cast<double>(r.spec.capacity - r.in_use)
                           : r.tokens;
    for (TaskId id : woken) {
      const Entry* e = Find(id);
      if (e != nullptr && e->task.state() == v1::TASK_STATE_READY &&
          e->parked == Entry::Parked::kNo) {
        available -= static_cast<double>(NeedOf(e->task.spec(), name));
      }
    }
    // In dispatch order, while the first waiter's need is there (a large need is not
    // overtaken by smaller ones behind it).
    std::vector<std::string> types;
    while (!r.waiters.empty()) {
      Entry* e = Find(r.waiters.begin()->id);
      if (e == nullptr) {
        r.waiters.erase(r.waiters.begin());
        continue;
      }
      const double need = static_cast<double>(NeedOf(e->task.spec(), name));
      if (need > available + kEpsilon) {
        if (r.spec.kind == ResourceSpec::Kind::kTokenBucket) {
          ArmRefill(r, need - std::max(0.0, available));
        }
        break;
      }
      available -= need;
      const std::string& type = e->task.spec().type();
      if (std::find(types.begin(), types.end(), type) == types.end()) types.push_back(type);
      woken.push_back(e->task.id());
      Unpark(*e);
    }
    if (types.empty()) break;
    for (const std::string& type : types) DispatchType(type);
  }
}

absl::Status Engine::ValidateResources(const v1::TaskSpec& spec, const std::string& f) const {
  if (spec.resources_size() > kMaxResourceNeeds) {
    return absl::InvalidArgumentError(absl::StrCat(f, ".resources: ", spec.resources_size(),
                                                   " entries exceed the limit of ",
                                                   kMaxResourceNeeds));
  }
  for (int i = 0; i < spec.resources_size(); ++i) {
    const v1::ResourceNeed& n = spec.resources(i);
    const std::string field = absl::StrCat(f, ".resources[", i, "]");
    auto it = options_.resources.find(n.name());
    if (it == options_.resources.end()) {
      std::vector<std::string> names;
      for (const auto& [name, r] : options_.resources) names.push_back(name);
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".name: unknown resource \"", n.name().substr(0, 80),
          "\" (configured: ", names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
    }
    if (n.amount() < 1 || n.amount() > it->second.capacity) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".amount: must be 1 to ",
                                                     it->second.capacity, " (the capacity of \"",
                                                     n.name(), "\"), got ", n.amount()));
    }
    for (int j = 0; j < i; ++j) {
      if (spec.resources(j).name() == n.name()) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".name: \"", n.name(), "\" is listed twice"));
      }
    }
  }
  return absl::OkStatus();
}

std::vector<ResourceUsage> Engine::Resources() const {
  std::vector<ResourceUsage> out;
  const absl::Time t = now();
  for (const auto& [name, r] : resources_) {
    ResourceUsage u;
    u.name = name;
    u.spec = r.spec;
    u.in_use = r.in_use;
    if (r.spec.kind == ResourceSpec::Kind::kSemaphore) {
      u.available = static_cast<double>(r.spec.capacity - r.in_use);
    } else {
      u.available = TokensAt(r, t);
    }
    u.waiting = static_cast<int64_t>(r.waiters.size());
    u.acquired_total = r.acquired_total;
    out.push_back(std::move(u));
  }
  return out;
}

std::vector<TenantUsage> Engine::Tenants() const {
  absl::btree_map<std::string, TenantUsage> by_name;
  for (const auto& [type, q] : queues_) {
    for (const Level& level : q.levels) {
      for (const auto& [tenant, tq] : level.tenants) {
        TenantUsage& u = by_name[tenant];
        u.tenant = tenant;
        u.weight = tq.weight;
        u.ready += static_cast<int64_t>(tq.ready.size());
        u.dispatched_total += tq.dispatched;
      }
    }
  }
  std::vector<TenantUsage> out;
  for (auto& [name, u] : by_name) out.push_back(std::move(u));
  return out;
}

// ---------------------------------------------------------------------------------------
// Cost

void Engine::ChargeAttempt(Entry& e, const v1::Attempt& a) {
  const double seconds = static_cast<double>(a.ended_unix_ms() - a.started_unix_ms()) / 1000.0;
  const double cost = a.cost();
  e.task.set_cost(e.task.cost() + cost);
  CostSum& sum = costs_[{e.task.spec().tenant(), e.task.spec().type()}];
  sum.cost += cost;
  sum.run_seconds += seconds;
  sum.attempts++;
  costs_dirty_ = true;
  if (e.task.workflow_id() != 0) {
    auto w = workflows_.find(e.task.workflow_id());
    if (w != workflows_.end()) {
      w->second.record.set_cost(w->second.record.cost() + cost);
      MarkWorkflowDirty(w->first);
    }
  }
}

void Engine::RestoreCosts(const v1::CostTotals& totals) {
  for (const v1::CostSum& s : totals.sums()) {
    CostSum& sum = costs_[{s.tenant(), s.type()}];
    sum.cost = s.cost();
    sum.run_seconds = s.run_seconds();
    sum.attempts = s.attempts();
  }
}

v1::CostTotals Engine::CostTotalsRecord() const {
  v1::CostTotals out;
  for (const auto& [key, sum] : costs_) {
    v1::CostSum* s = out.add_sums();
    s->set_tenant(key.first);
    s->set_type(key.second);
    s->set_cost(sum.cost);
    s->set_run_seconds(sum.run_seconds);
    s->set_attempts(sum.attempts);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Preemption

void Engine::Preempt(Entry& critical) {
  const std::string& type = critical.task.spec().type();
  TypeQueue& q = queues_[type];
  // Only when it waits for an agent: a free agent means something else holds it back.
  if (critical.parked != Entry::Parked::kNo || !q.idle_agents.empty()) return;
  // The victim: a background task before a low one, then the most recently started (the
  // least work lost), then the highest id.
  Entry* victim = nullptr;
  AgentInfo* holder = nullptr;
  auto better = [](const Entry& a, const Entry& b) {
    const auto rank = [](const Entry& x) {
      const v1::Task& t = x.task;
      return std::make_tuple(
          static_cast<int>(t.spec().priority()),
          t.history_size() > 0 ? t.history(t.history_size() - 1).started_unix_ms() : 0, t.id());
    };
    return rank(a) > rank(b);
  };
  for (auto& [id, agent] : agents_) {
    if (agent.leaving || !agent.stream_open ||
        std::find(agent.types.begin(), agent.types.end(), type) == agent.types.end()) {
      continue;
    }
    for (TaskId t : agent.leased) {
      Entry* e = Find(t);
      if (e == nullptr || !IsLowWork(e->task)) continue;
      if (victim == nullptr || better(*e, *victim)) {
        victim = e;
        holder = &agent;
      }
    }
  }
  if (victim == nullptr) {
    Arm(TimerKind::kPreempt, critical.task.id(), critical.gen, now() + options_.preempt_after);
    return;
  }
  probe_.preempted++;
  const std::string why = absl::StrCat("preempted by critical task ", critical.task.id(),
                                       " (ready for ", now_ms() - critical.task.updated_unix_ms(),
                                       " ms with every agent of type ", type, " busy)");
  {
    v1::Event& ev = Emit("task.preempted");
    ev.set_tenant(victim->task.spec().tenant());
    ev.set_task_id(victim->task.id());
    ev.set_workflow_id(victim->task.workflow_id());
    ev.set_agent_id(holder->id);
    ev.set_message(why);
    (*ev.mutable_attrs())["priority"] = PriorityName(victim->task.spec().priority());
    (*ev.mutable_attrs())["by_task"] = absl::StrCat(critical.task.id());
  }
  PushCancel(victim->task, why);
  CloseAttempt(*victim, "preempted", why, false);
  ReleaseFromAgent(*victim);
  FillAgent(*holder);  // the critical task (or another as urgent) takes the slot
  MakeReady(*victim);  // back in line, keeping its checkpoint; not counted
  if (critical.task.state() == v1::TASK_STATE_READY) {
    Arm(TimerKind::kPreempt, critical.task.id(), critical.gen, now() + options_.preempt_after);
  }
}

}  // namespace drover::core
