#include "scale/backtest.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "scale/members.h"

namespace drover::scale {

absl::StatusOr<BacktestReport> Backtest(const Series& s, const BacktestOptions& o) {
  const auto wall = std::chrono::steady_clock::now();
  if (o.train_minutes < 60) {
    return absl::InvalidArgumentError("--train: must be at least 60 minutes");
  }
  if (static_cast<int64_t>(s.size()) < o.train_minutes + kMaxHorizon) {
    return absl::InvalidArgumentError(
        absl::StrCat("--trace: ", s.size(), " minutes is too short for ", o.train_minutes,
                     " minutes of training and a ", kMaxHorizon, "-minute horizon"));
  }
  EnsembleOptions eo;
  eo.members = o.models;
  eo.seed = o.seed;
  eo.half_life_minutes = 1e300;  // plain means
  eo.min_samples = 60;
  absl::StatusOr<std::unique_ptr<Ensemble>> e = Ensemble::Create(eo);
  if (!e.ok()) return e.status();
  (*e)->set_sizing(o.sizing);
  BacktestReport r;
  r.fit_seconds.assign(o.models.size(), 0);
  // Members are trained one by one (to time each); later trainings warm-start from clones.
  auto fit = [&](size_t origin) -> absl::Status {
    const Series past = s.Prefix(origin);
    std::vector<std::unique_ptr<Forecaster>> from = (*e)->Clones();
    std::vector<std::unique_ptr<Forecaster>> fitted;
    for (size_t i = 0; i < o.models.size(); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      std::unique_ptr<Forecaster> f;
      if (i < from.size() && from[i] != nullptr) {
        f = std::move(from[i]);
        if (absl::Status st = f->Update(past); !st.ok()) return st;
      } else {
        absl::StatusOr<std::unique_ptr<Forecaster>> nf = NewForecaster(o.models[i], o.seed);
        if (!nf.ok()) return nf.status();
        f = std::move(*nf);
        if (absl::Status st = f->Fit(past); !st.ok()) {
          return absl::Status(st.code(), absl::StrCat(o.models[i], ": ", st.message()));
        }
      }
      r.fit_seconds[i] +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      fitted.push_back(std::move(f));
    }
    (*e)->Install(std::move(fitted));
    r.fits++;
    return absl::OkStatus();
  };
  size_t next_fit = static_cast<size_t>(o.train_minutes);
  Series known = s.Prefix(static_cast<size_t>(o.train_minutes));  // grows a minute at a time
  for (size_t n = static_cast<size_t>(o.train_minutes); n <= s.size(); ++n) {
    if (n > known.size()) {
      known.arrivals.push_back(s.arrivals[n - 1]);
      if (!s.queue.empty()) known.queue.push_back(s.queue[n - 1]);
    }
    if (n >= next_fit && n < s.size()) {
      if (absl::Status st = fit(n); !st.ok()) return st;
      next_fit = n + static_cast<size_t>(std::max<int64_t>(60, o.refit_minutes));
    }
    // (The ensemble scores what matured with minute n - 1, and forecasts after it.)
    (*e)->OnMinute(known);
    r.origins++;
  }
  r.scores = (*e)->scores();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count();
  return r;
}

}  // namespace drover::scale
