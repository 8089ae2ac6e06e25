// Admission: whether submitted tasks may enter. A tenant's own quota first (a token bucket
// of submissions and a count of its outstanding tasks, docs/security.md#quotas), then the
// capacity every tenant shares and load shedding above shed_fraction
// (docs/task-states.md). See engine.h for the contract.
#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/engine.h"
#include "core/names.h"

namespace drover::core {

using internal::EffectivePriority;

int64_t Engine::outstanding(const std::string& tenant) const {
  auto it = tenant_outstanding_.find(tenant);
  return it == tenant_outstanding_.end() ? 0 : it->second;
}

void Engine::CountOutstanding(const v1::Task& t, int64_t delta) {
  auto it = tenant_outstanding_.try_emplace(t.spec().tenant(), 0).first;
  it->second += delta;
  if (it->second == 0) tenant_outstanding_.erase(it);
}

absl::Status Engine::AdmitTenants(const std::vector<const v1::TaskSpec*>& fresh,
                                  const std::string* tenant_of_all) {
  if (options_.tenant_quotas.empty() && options_.default_quota.submits_per_second == 0 &&
      options_.default_quota.max_outstanding == 0) {
    return absl::OkStatus();
  }
  std::map<std::string, int64_t> wanted;  // ordered: the first refusal is deterministic
  for (const v1::TaskSpec* s : fresh) {
    const std::string& t = tenant_of_all != nullptr ? *tenant_of_all : s->tenant();
    wanted[t.empty() ? "default" : t]++;
  }
  // Buckets to take from once every tenant passed, by name: a later insert into
  // submit_buckets_ may move the ones already looked at.
  std::vector<std::pair<std::string, double>> takes;
  const absl::Time t = now();
  for (const auto& [tenant, n] : wanted) {
    auto listed = options_.tenant_quotas.find(tenant);
    const EngineOptions::TenantQuota& q =
        listed == options_.tenant_quotas.end() ? options_.default_quota : listed->second;
    const std::string key = listed == options_.tenant_quotas.end() ? "" : tenant;
    const std::string where = listed == options_.tenant_quotas.end()
                                  ? absl::StrCat("tenants.\"*\" (every tenant not listed)")
                                  : absl::StrCat("tenants.", tenant);
    auto refuse = [&](std::string msg, absl::Duration hint, bool rate) {
      (rate ? probe_.rejected_quota[key].rate : probe_.rejected_quota[key].outstanding) +=
          static_cast<int64_t>(fresh.size());
      hint = std::max(hint, absl::Milliseconds(1));
      absl::Status st = absl::ResourceExhaustedError(
          absl::StrCat(msg, "; retry after ", absl::FormatDuration(hint)));
      st.SetPayload(
          kRetryAfterPayload,
          absl::Cord(absl::StrCat(std::max<int64_t>(1, absl::ToInt64Milliseconds(hint)))));
      return st;
    };
    if (q.max_outstanding > 0) {
      const int64_t out = outstanding(tenant);
      if (out + n > q.max_outstanding) {
        return refuse(absl::StrCat("tenant quota: tenant \"", tenant, "\" has ", out, " of ",
                                   q.max_outstanding, " outstanding tasks, ", n,
                                   " more do not fit (", where, ".max_outstanding)"),
                      options_.min_retry_after, false);
      }
    }
    if (q.submits_per_second > 0) {
      const double burst = q.burst > 0 ? q.burst : std::max(1.0, q.submits_per_second);
      Bucket& b = submit_buckets_[tenant];
      if (!b.started) {
        b = Bucket{burst, t, true};
      } else if (t > b.at) {
        b.tokens =
            std::min(burst, b.tokens + absl::ToDoubleSeconds(t - b.at) * q.submits_per_second);
        b.at = t;
      }
      if (static_cast<double>(n) > burst) {
        return refuse(absl::StrCat("tenant quota: ", n, " tasks in one call exceed tenant \"",
                                   tenant, "\"'s burst of ", burst, " (", where,
                                   ".submit_burst); send smaller batches"),
                      absl::Seconds(burst / q.submits_per_second), true);
      }
      if (b.tokens < static_cast<double>(n)) {
        const double missing = static_cast<double>(n) - b.tokens;
        return refuse(
            absl::StrCat("tenant quota: tenant \"", tenant, "\" may submit ", q.submits_per_second,
                         " tasks/s (", where, ".max_submits_per_second)"),
            absl::Seconds(missing / q.submits_per_second), true);
      }
      takes.emplace_back(tenant, static_cast<double>(n));
    }
  }
  for (const auto& [tenant, n] : takes) submit_buckets_[tenant].tokens -= n;
  return absl::OkStatus();
}

absl::Status Engine::Admit(const std::vector<const v1::TaskSpec*>& fresh,
                           const std::string* tenant) {
  if (fresh.empty()) return absl::OkStatus();
  absl::Status st = AdmitOrRefuse(fresh, tenant);
  if (!st.ok()) NoteRefusal(st, tenant != nullptr ? *tenant : fresh[0]->tenant(), fresh.size());
  return st;
}

absl::Status Engine::AdmitOrRefuse(const std::vector<const v1::TaskSpec*>& fresh,
                                   const std::string* tenant) {
  // A tenant's own quota first: one tenant's flood is refused before it fills the queue
  // that every tenant shares.
  if (absl::Status st = AdmitTenants(fresh, tenant); !st.ok()) return st;
  const int64_t now_out = outstanding();
  const int64_t after = now_out + static_cast<int64_t>(fresh.size());
  const int64_t shed_at = static_cast<int64_t>(
      std::floor(options_.shed_fraction * static_cast<double>(options_.capacity)));
  // The hint: how long the backlog above the threshold takes to drain at the recent
  // completion rate is not known to a pure engine; a fixed floor, scaled by how far past
  // the threshold we are, keeps clients from hammering.
  auto exhausted = [&](const std::string& msg, double over) {
    absl::Duration hint = options_.min_retry_after * std::max(1.0, over);
    absl::Status st = absl::ResourceExhaustedError(
        absl::StrCat(msg, "; retry after ", absl::FormatDuration(hint)));
    st.SetPayload(kRetryAfterPayload, absl::Cord(absl::StrCat(absl::ToInt64Milliseconds(hint))));
    return st;
  };
  if (after > options_.capacity) {
    probe_.rejected_full += static_cast<int64_t>(fresh.size());
    return exhausted(absl::StrCat("queue full: ", now_out, " of ", options_.capacity,
                                  " outstanding tasks, ", fresh.size(), " more do not fit"),
                     2.0);
  }
  if (after > shed_at) {
    for (const v1::TaskSpec* s : fresh) {
      int p = EffectivePriority(s->priority());
      if (p > v1::PRIORITY_HIGH) {
        probe_.rejected_shed += static_cast<int64_t>(fresh.size());
        return exhausted(
            absl::StrCat("load shedding: ", now_out, " of ", options_.capacity,
                         " outstanding tasks; with ", fresh.size(), " more the queue passes ",
                         std::lround(options_.shed_fraction * 100), " % (", shed_at,
                         " tasks), where only critical and high priority are admitted (got ",
                         PriorityName(s->priority()), ")"),
            1.0);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace drover::core
