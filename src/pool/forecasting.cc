// pool: the forecasting half of the PoolController (controller.h): each pool's per-minute
// load history (from the engine's per-type counters), its scale::Ensemble (trained through
// the fit runner, scored and asked every closed minute), the predictive decision next to
// the reactive one, and what ListPools shows of it.
#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "pool/controller.h"
#include "scale/members.h"

namespace drover::pool {

namespace {

// Calendar minutes count from a Monday (scale/forecast.h); the Unix epoch was a Thursday.
constexpr int64_t kUnixToCalendar = 3 * scale::kMinutesPerDay;
constexpr size_t kMaxSeries = 35 * scale::kMinutesPerDay;

double QuantileOf(std::vector<float>& v, double q) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<ptrdiff_t>(k), v.end());
  return v[k];
}

}  // namespace

void PoolController::CloseMinutes(Pool& p, absl::Time now, const Observation& seen) {
  core::TypeLoad total;
  for (const std::string& t : p.spec.types) {
    auto it = seen.load.find(t);
    if (it == seen.load.end()) continue;
    total.arrived += it->second.arrived;
    total.dispatched += it->second.dispatched;
    total.ended += it->second.ended;
    total.run_seconds += it->second.run_seconds;
    p.minute_runs.insert(p.minute_runs.end(), it->second.runs.begin(), it->second.runs.end());
  }
  const int64_t minute = absl::ToUnixSeconds(now) / 60;
  if (p.open_minute < 0) {
    // The first round: counting starts now (what came before belongs to no minute of ours).
    p.open_minute = minute;
    p.base = total;
    p.minute_runs.clear();
    if (p.series.arrivals.empty()) p.series.start_minute = minute + kUnixToCalendar;
    return;
  }
  p.open_arrivals = total.arrived - p.base.arrived;
  // A training that finished on its thread is installed at the next round, not the next
  // minute (a pool seeded with history forecasts at once).
  if (minute <= p.open_minute) {
    if (p.fitting && p.ensemble && p.ensemble->fits() == 0) Forecast(p, now);
    return;
  }
  // Everything since the open minute's start is that minute's (rounds come at least every
  // minute: NextDue); minutes with no round at all were empty.
  for (int64_t m = p.open_minute; m < minute; ++m) {
    store::LoadMinute row;
    row.pool = p.spec.name;
    row.minute = m;
    if (m == p.open_minute) {
      row.arrivals = total.arrived - p.base.arrived;
      row.dispatches = total.dispatched - p.base.dispatched;
      row.completions = total.ended - p.base.ended;
      if (row.completions > 0) {
        row.service_mean_s =
            (total.run_seconds - p.base.run_seconds) / static_cast<double>(row.completions);
        row.service_p95_s = QuantileOf(p.minute_runs, 0.95);
        // The learnt service time: weighted by the minute's completions.
        const double alpha = 1 - std::pow(0.99, static_cast<double>(row.completions));
        p.service_s = p.service_s == 0 ? row.service_mean_s
                                       : p.service_s + alpha * (row.service_mean_s - p.service_s);
      }
    }
    row.queue_depth = p.pending;
    for (const Member& mb : p.members) {
      switch (mb.state) {
        case Member::State::kStarting:
          row.agents_starting++;
          break;
        case Member::State::kIdle:
          row.agents_idle++;
          break;
        case Member::State::kBusy:
          row.agents_busy++;
          break;
        case Member::State::kDraining:
        case Member::State::kStopping:
          row.agents_draining++;
          break;
      }
    }
    p.series.arrivals.push_back(static_cast<double>(row.arrivals));
    p.series.queue.push_back(static_cast<double>(row.queue_depth));
    if (p.rows.size() < 100'000) p.rows.push_back(std::move(row));
  }
  if (p.series.size() > kMaxSeries) {
    const size_t drop = p.series.size() - kMaxSeries;
    p.series.arrivals.erase(p.series.arrivals.begin(),
                            p.series.arrivals.begin() + static_cast<ptrdiff_t>(drop));
    p.series.queue.erase(p.series.queue.begin(),
                         p.series.queue.begin() + static_cast<ptrdiff_t>(drop));
    p.series.start_minute += static_cast<int64_t>(drop);
  }
  p.open_minute = minute;
  p.base = total;
  p.open_arrivals = 0;
  p.minute_runs.clear();
  Forecast(p, now);
}

void PoolController::Forecast(Pool& p, absl::Time now) {
  if (forecast_override_) {
    std::optional<scale::Snapshot> o = forecast_override_(p.spec.name, p.series);
    p.have_oracle = o.has_value();
    if (o) {
      p.oracle = std::move(*o);
      return;
    }
  }
  if (!p.ensemble) return;
  scale::SizingModel m;
  m.service_s = p.service_s > 0 ? p.service_s : absl::ToDoubleSeconds(p.spec.expected_service);
  m.slots = p.spec.concurrency;
  m.objective_s = p.spec.predictive.objective_s;
  m.quantile = p.spec.predictive.quantile;
  p.ensemble->set_sizing(m);
  if (!p.models_loaded && !model_dir_.empty()) {
    p.models_loaded = true;
    for (const std::string& problem : p.ensemble->LoadModels(ModelPrefix(p.spec.name))) {
      p.model_error = problem;
      log_(absl::StrCat("pool ", p.spec.name, ": ", problem,
                        "; refused: it trains afresh, and the reactive rule decides until its "
                        "forecasts are trusted"));
    }
  }
  // A finished training is installed first.
  if (p.fitting) {
    std::lock_guard<std::mutex> lock(p.fitting->mu);
    if (p.fitting->done) {
      if (p.fitting->warmed) {
        p.ensemble = std::move(p.fitting->warmed);
        p.fits++;
        p.model_error = p.fitting->save_error;
      } else if (p.fitting->members.ok()) {
        p.ensemble->Install(std::move(*p.fitting->members));
        p.fits++;
        p.model_error = p.fitting->save_error;
      } else {
        p.model_error = std::string(p.fitting->members.status().message());
        log_(absl::StrCat("pool ", p.spec.name, ": training the forecasters failed: ",
                          p.model_error, "; the reactive rule decides meanwhile"));
      }
      p.fitting.reset();
    }
  }
  // Training: when due, and sooner while the history is young (it doubles between
  // trainings until retrain_every), or when the forecast's confidence collapsed.
  const double conf = p.ensemble->latest().origin >= 0 ? p.ensemble->latest().ConfidenceAt(15) : 1;
  const bool scored = p.ensemble->latest().origin >= 0 &&
                      p.ensemble->scores().back().at[2].samples >= p.spec.forecast.min_samples;
  const bool drifted = p.fits > 0 && scored && conf < p.spec.predictive.floor_confidence &&
                       now >= p.last_fit + absl::Hours(6);
  if (!p.fitting && p.series.size() >= 60 && (now >= p.next_fit || drifted)) {
    const absl::Duration age = absl::Minutes(static_cast<int64_t>(p.series.size()));
    p.next_fit = now + std::min(p.spec.retrain_every, std::max(absl::Hours(1), age));
    p.last_fit = now;
    auto slot = std::make_shared<Pool::FitSlot>();
    p.fitting = slot;
    // Learned members go on from copies of the current ones (a warm start), taken here
    // where nothing else uses them; the job owns everything it touches.
    auto from =
        std::make_shared<std::vector<std::unique_ptr<scale::Forecaster>>>(p.ensemble->Clones());
    auto history = std::make_shared<scale::Series>(p.series);
    std::string save_prefix = model_dir_.empty() ? "" : ModelPrefix(p.spec.name);
    // The first training also scores the recent past (a replay of the last minutes as if
    // forecast live), so a pool seeded with its history is trusted without waiting hours.
    const bool replay = p.ensemble->fits() == 0;
    const scale::SizingModel sizing = p.ensemble->sizing();
    auto job = [slot, from, history, options = p.spec.forecast, save_prefix, replay, sizing]() {
      auto members = scale::Ensemble::FitMembers(options, *history, std::move(*from));
      std::string save_error;
      if (members.ok() && !save_prefix.empty()) {
        for (const std::unique_ptr<scale::Forecaster>& f : *members) {
          if (!f->persistent()) continue;
          const std::string path = absl::StrCat(save_prefix, std::string(f->name()), ".model");
          if (absl::Status st = f->Save(path); !st.ok()) save_error = std::string(st.message());
        }
      }
      std::unique_ptr<scale::Ensemble> warmed;
      if (members.ok() && replay) {
        absl::StatusOr<std::unique_ptr<scale::Ensemble>> e = scale::Ensemble::Create(options);
        if (e.ok()) {
          (*e)->set_sizing(sizing);
          (*e)->Install(std::move(*members));
          const size_t n = history->size();
          const size_t back = std::min<size_t>(
              n, static_cast<size_t>(2 * options.min_samples + scale::kMaxHorizon));
          for (size_t k = n - back; k < n; ++k) (*e)->OnMinute(history->Prefix(k + 1));
          warmed = std::move(*e);
        }
      }
      std::lock_guard<std::mutex> lock(slot->mu);
      slot->members = std::move(members);
      slot->warmed = std::move(warmed);
      slot->minutes = static_cast<int64_t>(history->size());
      slot->save_error = std::move(save_error);
      slot->done = true;
    };
    if (fit_runner_) {
      fit_runner_(std::move(job));
    } else {
      job();
    }
    // (A job that ran at once is installed now.)
    std::lock_guard<std::mutex> lock(slot->mu);
    if (slot->done) {
      if (slot->warmed) {
        p.ensemble = std::move(slot->warmed);
        p.fits++;
        p.model_error = slot->save_error;
      } else if (slot->members.ok()) {
        p.ensemble->Install(std::move(*slot->members));
        p.fits++;
        p.model_error = slot->save_error;
      } else {
        p.model_error = std::string(slot->members.status().message());
      }
      p.fitting.reset();
    }
  }
  if (p.ensemble->fits() > 0 &&
      p.ensemble->latest().origin != static_cast<int64_t>(p.series.size())) {
    p.ensemble->OnMinute(p.series);
  }
}

const scale::Snapshot* PoolController::Latest(const Pool& p) const {
  if (p.have_oracle) return &p.oracle;
  if (p.ensemble && p.ensemble->latest().origin >= 0) return &p.ensemble->latest();
  return nullptr;
}

void PoolController::Decide(Pool& p, absl::Time now, scale::ScalingDecision& d,
                            const scale::ScalingInputs& in) {
  scale::PredictiveInputs pi;
  pi.forecast = Latest(p);
  pi.oracle = p.have_oracle;
  pi.service_s = p.service_s > 0 ? p.service_s : absl::ToDoubleSeconds(p.spec.expected_service);
  pi.slots = p.spec.concurrency;
  pi.startup = p.spec.expected_startup;
  if (p.latency.agent_start.count() > 0) {
    const double p95 = p.latency.agent_start.Quantile(0.95);
    if (p95 > 0) pi.startup = absl::Seconds(p95);
  }
  pi.current = in.current;
  pi.pending = in.pending;
  pi.busy_slots = in.busy_slots;
  const size_t n = p.series.size();
  double recent = 0;
  for (size_t i = n - std::min<size_t>(5, n); i < n; ++i) recent += p.series.arrivals[i];
  pi.recent_rate = n == 0 ? 0 : recent / static_cast<double>(std::min<size_t>(5, n));
  // The last 60 s: the open minute so far, plus the part of the previous minute before it.
  if (p.open_minute >= 0) {
    const double into = std::clamp(
        absl::ToDoubleSeconds(now - absl::FromUnixSeconds(p.open_minute * 60)), 0.0, 60.0);
    const double last = n > 0 ? p.series.arrivals[n - 1] : 0;
    pi.now_rate = static_cast<double>(p.open_arrivals) + last * (60 - into) / 60;
  }
  pi.reactive = d.desired;
  while (!p.up_targets.empty() && p.up_targets.front().first < now - p.spec.predictive.hold) {
    p.up_targets.pop_front();
  }
  for (const auto& [at, n] : p.up_targets) pi.recent_up = std::max(pi.recent_up, n);
  pi.min = p.spec.scaler.min;
  pi.max = p.spec.scaler.max;
  pi.budget_cap = in.budget_cap;
  const scale::PredictiveDecision pd = scale::DecidePredictive(p.spec.predictive, pi);
  p.up_targets.emplace_back(now, pd.up_target);
  scale::ScalingDecision::Predictive rec;
  rec.mode = scale::ModeName(p.spec.predictive.mode);
  rec.reactive = d.desired;
  rec.predictive = pd.desired;
  rec.forecast_agents = pd.forecast_agents;
  rec.floor = pd.floor;
  rec.confidence = pd.confidence;
  rec.fallback = pd.fallback;
  rec.rule = pd.rule;
  if (pi.forecast != nullptr) {
    scale::SizingModel m;
    m.service_s = pi.service_s;
    m.slots = pi.slots;
    m.objective_s = p.spec.predictive.objective_s;
    for (int h : {15, 30, 60}) {
      if (pi.forecast->forecast.minutes.size() < static_cast<size_t>(h)) continue;
      const scale::Quantiles& q = pi.forecast->forecast.minutes[static_cast<size_t>(h - 1)];
      rec.horizons.push_back(
          {h, q.mean, q.p10, q.p50, q.p90, pi.oracle ? 1.0 : pi.forecast->ConfidenceAt(h)});
    }
    if (p.ensemble && !pi.oracle) {
      for (size_t i = 0; i < pi.forecast->weights.size(); ++i) {
        rec.weights.emplace_back(p.spec.forecast.members[i], pi.forecast->weights[i][2]);
      }
    }
  }
  const char* band = pd.fallback                                         ? "low"
                     : pd.confidence >= p.spec.predictive.use_confidence ? "high"
                                                                         : "blend";
  const char* dir = pd.desired > in.current ? "up" : pd.desired < in.current ? "down" : "hold";
  p.predictive_by[absl::StrCat(dir, "/", band)]++;
  if (pd.fallback) p.fallbacks++;
  if (p.spec.predictive.mode == scale::Mode::kPredictive) {
    rec.applied = true;
    p.saved_agent_seconds += static_cast<double>(d.desired - pd.desired) *
                             absl::ToDoubleSeconds(p.spec.scaler.sync_period);
    d.desired = pd.desired;
    d.rule = pd.rule;
  } else if (pd.desired != d.desired) {
    p.disagreements++;
  }
  (void)now;
  d.predictive = std::move(rec);
}

std::vector<store::LoadMinute> PoolController::TakeLoadRows() {
  std::vector<store::LoadMinute> out;
  for (Pool& p : pools_) {
    for (store::LoadMinute& r : p.rows) out.push_back(std::move(r));
    p.rows.clear();
  }
  return out;
}

void PoolController::SeedHistory(const std::string& pool,
                                 const std::vector<store::LoadMinute>& rows) {
  for (Pool& p : pools_) {
    if (p.spec.name != pool || rows.empty()) continue;
    // Rows in minute order: the seeded history runs from the first row to the minute
    // before the open one (or the last row), gaps filled with zeros; minutes the pool
    // counted itself keep its own figures.
    const int64_t first = rows.front().minute;
    const int64_t own_first =
        p.series.arrivals.empty() ? INT64_MAX : p.series.start_minute - kUnixToCalendar;
    int64_t end = std::max(rows.back().minute + 1, p.open_minute >= 0 ? p.open_minute : 0);
    if (own_first != INT64_MAX)
      end = std::max(end, own_first + static_cast<int64_t>(p.series.size()));
    if (end - first > static_cast<int64_t>(kMaxSeries)) {
      // (only the most recent kMaxSeries minutes are kept)
    }
    scale::Series s;
    s.start_minute = first + kUnixToCalendar;
    s.arrivals.assign(static_cast<size_t>(end - first), 0);
    s.queue.assign(static_cast<size_t>(end - first), 0);
    for (const store::LoadMinute& r : rows) {
      if (r.minute < first || r.minute >= end) continue;
      s.arrivals[static_cast<size_t>(r.minute - first)] = static_cast<double>(r.arrivals);
      s.queue[static_cast<size_t>(r.minute - first)] = static_cast<double>(r.queue_depth);
    }
    if (own_first != INT64_MAX) {
      for (size_t i = 0; i < p.series.size(); ++i) {
        const int64_t m = own_first + static_cast<int64_t>(i);
        if (m < first || m >= end) continue;
        s.arrivals[static_cast<size_t>(m - first)] = p.series.arrivals[i];
        if (i < p.series.queue.size()) s.queue[static_cast<size_t>(m - first)] = p.series.queue[i];
      }
    }
    if (s.size() > kMaxSeries) {
      const size_t drop = s.size() - kMaxSeries;
      s.arrivals.erase(s.arrivals.begin(), s.arrivals.begin() + static_cast<ptrdiff_t>(drop));
      s.queue.erase(s.queue.begin(), s.queue.begin() + static_cast<ptrdiff_t>(drop));
      s.start_minute += static_cast<int64_t>(drop);
    }
    p.series = std::move(s);
    p.next_fit = absl::Time();  // train on it at the next minute
  }
}

const scale::Ensemble* PoolController::EnsembleOf(const std::string& pool) const {
  for (const Pool& p : pools_) {
    if (p.spec.name == pool) return p.ensemble.get();
  }
  return nullptr;
}

const scale::Series* PoolController::SeriesOf(const std::string& pool) const {
  for (const Pool& p : pools_) {
    if (p.spec.name == pool) return &p.series;
  }
  return nullptr;
}

void PoolController::FillForecast(const Pool& p, const scale::Snapshot& snap,
                                  v1::PoolForecast* out) const {
  const int64_t origin_minute = p.series.start_minute - kUnixToCalendar + snap.origin;
  out->set_origin_unix_ms(origin_minute * 60'000);
  out->set_model(p.have_oracle ? "oracle" : snap.forecast.model);
  out->set_history_minutes(static_cast<int64_t>(p.series.size()));
  scale::SizingModel m;
  m.service_s = p.service_s > 0 ? p.service_s : absl::ToDoubleSeconds(p.spec.expected_service);
  m.slots = p.spec.concurrency;
  m.objective_s = p.spec.predictive.objective_s;
  out->set_service_s(m.service_s);
  double startup = absl::ToDoubleSeconds(p.spec.expected_startup);
  if (p.latency.agent_start.count() > 0 && p.latency.agent_start.Quantile(0.95) > 0) {
    startup = p.latency.agent_start.Quantile(0.95);
  }
  out->set_startup_s(startup);
  for (int h : {15, 30, 60}) {
    if (snap.forecast.minutes.size() < static_cast<size_t>(h)) continue;
    const scale::Quantiles& q = snap.forecast.minutes[static_cast<size_t>(h - 1)];
    v1::ForecastHorizon* fh = out->add_horizons();
    fh->set_minutes(h);
    fh->set_mean(q.mean);
    fh->set_p10(q.p10);
    fh->set_p50(q.p50);
    fh->set_p90(q.p90);
    fh->set_confidence(p.have_oracle ? 1.0 : snap.ConfidenceAt(h));
    fh->set_agents(static_cast<int32_t>(scale::AgentsFor(m, q.p90)));
  }
  if (!p.ensemble || p.have_oracle) return;
  const std::vector<scale::Ensemble::ModelScores> scores = p.ensemble->scores();
  for (size_t i = 0; i < scores.size(); ++i) {
    for (int h : {15, 30, 60}) {
      const size_t k = static_cast<size_t>(h / 5 - 1);
      const scale::Scores& sc = scores[i].at[k];
      v1::ModelScore* ms = out->add_scores();
      ms->set_model(scores[i].model);
      ms->set_minutes(h);
      ms->set_weight(i < snap.weights.size() ? snap.weights[i][k] : 1.0);
      ms->set_mae(sc.mae);
      ms->set_mae_agents(sc.mae_agents);
      ms->set_mape(sc.mape);
      ms->set_coverage(sc.coverage);
      ms->set_samples(sc.samples);
    }
  }
}

}  // namespace drover::pool
