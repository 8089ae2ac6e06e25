#include "scale/ensemble.h"

#include <algorithm>
#include <cmath>
#include <future>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "scale/members.h"

namespace drover::scale {
namespace {

constexpr double kNominalCoverage = 0.8;  // p10-p90

double WindowMean(const std::vector<Quantiles>& m, int h, double Quantiles::*field) {
  double sum = 0;
  for (int j = h - 4; j <= h; ++j) sum += m[static_cast<size_t>(j - 1)].*field;
  return sum / 5;
}

}  // namespace

double Snapshot::ConfidenceAt(int minutes) const {
  const int k = std::clamp((minutes + 4) / 5, 1, kScored) - 1;
  return confidence[static_cast<size_t>(k)];
}

absl::StatusOr<std::unique_ptr<Ensemble>> Ensemble::Create(const EnsembleOptions& o) {
  if (o.members.empty()) return absl::InvalidArgumentError("models: at least one is needed");
  std::unique_ptr<Ensemble> e(new Ensemble(o));
  for (size_t i = 0; i < o.members.size(); ++i) {
    absl::StatusOr<std::unique_ptr<Forecaster>> f = NewForecaster(o.members[i], o.seed);
    if (!f.ok()) return f.status();
    if (o.members[i] == o.use) e->use_ = static_cast<int>(i);
    e->members_.push_back(std::move(*f));
  }
  if (o.use != "ensemble" && e->use_ < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: \"", o.use, "\" is not one of the members (",
                     absl::StrJoin(o.members, ", "), ") nor \"ensemble\""));
  }
  e->running_.resize(o.members.size() + 1);
  e->upper_.fill(1);
  e->lower_.fill(1);
  return e;
}

absl::StatusOr<std::vector<std::unique_ptr<Forecaster>>> Ensemble::FitMembers(
    const EnsembleOptions& o, const Series& history,
    std::vector<std::unique_ptr<Forecaster>> from) {
  const size_t n = o.members.size();
  std::vector<std::unique_ptr<Forecaster>> out(n);
  std::vector<absl::Status> status(n);
  // Each member trains on its own state only (its own seed and generator): trained on
  // threads of their own they learn exactly what they would one after another.
  auto train = [&](size_t i) {
    if (i < from.size() && from[i] != nullptr) {
      status[i] = from[i]->Update(history);
      out[i] = std::move(from[i]);
      return;
    }
    absl::StatusOr<std::unique_ptr<Forecaster>> f = NewForecaster(o.members[i], o.seed);
    if (!f.ok()) {
      status[i] = f.status();
      return;
    }
    status[i] = (*f)->Fit(history);
    out[i] = std::move(*f);
  };
  if (o.parallel_fit && n > 1) {
    std::vector<std::future<void>> jobs;
    for (size_t i = 1; i < n; ++i) jobs.push_back(std::async(std::launch::async, train, i));
    train(0);
    for (std::future<void>& j : jobs) j.get();
  } else {
    for (size_t i = 0; i < n; ++i) train(i);
  }
  for (size_t i = 0; i < n; ++i) {
    if (!status[i].ok()) {
      return absl::Status(status[i].code(), absl::StrCat(o.members[i], ": ", status[i].message()));
    }
  }
  return out;
}

std::vector<std::unique_ptr<Forecaster>> Ensemble::Clones() const {
  std::vector<std::unique_ptr<Forecaster>> out;
  for (const std::unique_ptr<Forecaster>& f : members_) out.push_back(f->Clone());
  return out;
}

absl::Status Ensemble::SaveModels(const std::string& prefix) const {
  for (const std::unique_ptr<Forecaster>& f : members_) {
    if (!f->persistent()) continue;
    if (absl::Status st = f->Save(absl::StrCat(prefix, std::string(f->name()), ".model")); !st.ok())
      return st;
  }
  return absl::OkStatus();
}

std::vector<std::string> Ensemble::LoadModels(const std::string& prefix) {
  std::vector<std::string> problems;
  for (std::unique_ptr<Forecaster>& f : members_) {
    if (!f->persistent()) continue;
    if (absl::Status st = f->Load(absl::StrCat(prefix, std::string(f->name()), ".model"));
        !st.ok()) {
      problems.push_back(std::string(st.message()));
    }
  }
  return problems;
}

void Ensemble::Install(std::vector<std::unique_ptr<Forecaster>> members) {
  if (members.size() != members_.size()) return;
  members_ = std::move(members);
  fits_++;
}

absl::Status Ensemble::Fit(const Series& history) {
  for (size_t i = 0; i < members_.size(); ++i) {
    if (absl::Status st = members_[i]->Fit(history); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat(options_.members[i], ": ", st.message()));
    }
  }
  fits_++;
  fitted_minutes_ = static_cast<int64_t>(history.size());
  return absl::OkStatus();
}

void Ensemble::Score(const Series& s) {
  const int64_t now = static_cast<int64_t>(s.size());  // minutes known
  const double decay = std::pow(0.5, 1.0 / options_.half_life_minutes);
  for (const Past& p : past_) {
    const int64_t h = now - p.origin;  // the newest known minute is horizon h
    if (h < 5 || h > kMaxHorizon || h % 5 != 0) continue;
    const size_t k = static_cast<size_t>(h / 5 - 1);
    double actual = 0;
    for (int64_t j = now - 5; j < now; ++j) actual += s.arrivals[static_cast<size_t>(j)];
    actual /= 5;
    const double actual_agents = static_cast<double>(AgentsFor(sizing_, actual));
    for (size_t m = 0; m < p.f.size() && m < running_.size(); ++m) {
      const std::vector<Quantiles>& q = p.f[m].minutes;
      if (q.size() < static_cast<size_t>(h)) continue;
      const double mean = WindowMean(q, static_cast<int>(h), &Quantiles::mean);
      const double lo = WindowMean(q, static_cast<int>(h), &Quantiles::p10);
      const double hi = WindowMean(q, static_cast<int>(h), &Quantiles::p90);
      Running& r = running_[m][k];
      r.w = r.w * decay + 1;
      r.abs = r.abs * decay + std::abs(mean - actual);
      r.abs_agents = r.abs_agents * decay +
                     std::abs(static_cast<double>(AgentsFor(sizing_, mean)) - actual_agents);
      r.agents = r.agents * decay + actual_agents;
      r.cover = r.cover * decay + (actual >= lo - 1e-9 && actual <= hi + 1e-9 ? 1 : 0);
      if (m + 1 == p.f.size()) {
        // The ensemble (last): calibrate its band (see the header).
        constexpr double kRate = 0.02, kTail = 0.1;
        upper_[k] *= actual > hi + 1e-9 ? 1 + kRate * (1 - kTail) : 1 - kRate * kTail;
        lower_[k] *= actual < lo - 1e-9 ? 1 + kRate * (1 - kTail) : 1 - kRate * kTail;
        upper_[k] = std::clamp(upper_[k], 0.05, 20.0);
        lower_[k] = std::clamp(lower_[k], 0.05, 20.0);
      }
      r.ape_w *= decay;
      r.ape *= decay;
      if (actual > 0) {
        r.ape_w += 1;
        r.ape += std::abs(mean - actual) / actual;
      }
      r.n++;
    }
  }
}

Forecast Ensemble::Combine(const std::vector<Forecast>& fs, const Snapshot& snap) const {
  Forecast out;
  out.model = "ensemble";
  if (fs.empty()) return out;
  const size_t horizon = fs[0].minutes.size();
  out.minutes.resize(horizon);
  for (size_t h = 0; h < horizon; ++h) {
    const size_t k = std::min<size_t>(kScored - 1, h / 5);
    Quantiles& q = out.minutes[h];
    for (size_t m = 0; m < fs.size(); ++m) {
      const double w = snap.weights[m][k];
      if (w <= 0 || fs[m].minutes.size() <= h) continue;
      q.mean += w * fs[m].minutes[h].mean;
      q.p10 += w * fs[m].minutes[h].p10;
      q.p50 += w * fs[m].minutes[h].p50;
      q.p90 += w * fs[m].minutes[h].p90;
    }
    // The calibrated band (the factors of the scored horizon at or above this minute).
    const size_t kc = std::min<size_t>(kScored - 1, h / 5);
    q.p90 = q.p50 + upper_[kc] * std::max(0.0, q.p90 - q.p50);
    q.p10 = std::max(0.0, q.p50 - lower_[kc] * std::max(0.0, q.p50 - q.p10));
  }
  return out;
}

void Ensemble::OnMinute(const Series& s) {
  Score(s);
  Snapshot snap;
  snap.origin = static_cast<int64_t>(s.size());
  for (const std::unique_ptr<Forecaster>& f : members_) {
    absl::StatusOr<Forecast> fc = f->Predict(s, kMaxHorizon);
    if (!fc.ok()) {
      predict_errors_++;
      Forecast empty;
      empty.model = std::string(f->name());
      empty.minutes.assign(kMaxHorizon, Quantiles{});
      snap.members.push_back(std::move(empty));
      continue;
    }
    snap.members.push_back(std::move(*fc));
  }
  // Weights per scored horizon from the members' running errors.
  const size_t n = members_.size();
  snap.weights.assign(n, {});
  for (size_t k = 0; k < kScored; ++k) {
    bool any_scored = false;
    for (size_t m = 0; m < n; ++m) any_scored |= running_[m][k].n >= options_.min_samples;
    double total = 0;
    for (size_t m = 0; m < n; ++m) {
      const Running& r = running_[m][k];
      double w = 1;
      if (any_scored) {
        w = r.n >= options_.min_samples ? 1 / std::pow(r.abs / r.w + 0.01, 2) : 0;
      }
      snap.weights[m][k] = w;
      total += w;
    }
    for (size_t m = 0; m < n; ++m) snap.weights[m][k] /= total;
  }
  Forecast ensemble = Combine(snap.members, snap);
  // Confidence of the forecast in use.
  const size_t used = use_ < 0 ? n : static_cast<size_t>(use_);
  for (size_t k = 0; k < kScored; ++k) {
    const Running& r = running_[used][k];
    if (r.n < options_.min_samples || r.w <= 0) {
      snap.confidence[k] = 0;
      continue;
    }
    const double accuracy =
        1 - std::min(1.0, (r.abs_agents / r.w) / (2 * std::max(1.0, r.agents / r.w)));
    const double coverage = std::min(1.0, (r.cover / r.w) / kNominalCoverage);
    snap.confidence[k] = std::clamp(accuracy * coverage, 0.0, 1.0);
  }
  snap.forecast = use_ < 0 ? ensemble : snap.members[static_cast<size_t>(use_)];
  // Remember every forecast (members, ensemble) until its last horizon is scored.
  Past p{snap.origin, snap.members};
  p.f.push_back(ensemble);
  if (past_.size() > kMaxHorizon) past_.erase(past_.begin());
  past_.push_back(std::move(p));
  latest_ = std::move(snap);
}

std::vector<Ensemble::ModelScores> Ensemble::scores() const {
  std::vector<ModelScores> out;
  for (size_t m = 0; m < running_.size(); ++m) {
    ModelScores ms;
    ms.model = m < options_.members.size() ? options_.members[m] : "ensemble";
    for (size_t k = 0; k < kScored; ++k) {
      const Running& r = running_[m][k];
      Scores& s = ms.at[k];
      s.samples = r.n;
      if (r.w <= 0) continue;
      s.mae = r.abs / r.w;
      s.mae_agents = r.abs_agents / r.w;
      s.mean_agents = r.agents / r.w;
      s.coverage = r.cover / r.w;
      s.mape = r.ape_w > 0 ? r.ape / r.ape_w : 0;
    }
    out.push_back(std::move(ms));
  }
  return out;
}

}  // namespace drover::scale
