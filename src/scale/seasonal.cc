#include "scale/seasonal.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "absl/strings/str_cat.h"

namespace drover::scale {
namespace {

constexpr int kDayBlocks = kMinutesPerDay / kBlock;    // 288
constexpr int kWeekBlocks = kMinutesPerWeek / kBlock;  // 2016

double Quantile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<ptrdiff_t>(k), v.end());
  return v[k];
}

// The mean of minutes [i - 2, i + 2] of s that lie before `end`, or -1 when none does.
double Around(const Series& s, int64_t i, size_t end) {
  double sum = 0;
  int n = 0;
  for (int64_t j = i - 2; j <= i + 2; ++j) {
    if (j < 0 || j >= static_cast<int64_t>(end)) continue;
    sum += s.arrivals[static_cast<size_t>(j)];
    ++n;
  }
  return n == 0 ? -1 : sum / n;
}

}  // namespace

Bands Calibrate(const Series& s,
                const std::function<std::vector<double>(const Series&, size_t, int)>& point,
                int days, int every) {
  Bands b;
  const size_t n = s.size();
  const size_t span = static_cast<size_t>(days) * kMinutesPerDay;
  // Origins need a full horizon of known minutes after them.
  if (n < static_cast<size_t>(kMaxHorizon) + 60) return b;
  const size_t last = n - kMaxHorizon;
  const size_t first = last > span ? last - span : 60;
  std::array<std::vector<double>, kBlocks> res;
  for (size_t o = first; o <= last; o += static_cast<size_t>(every)) {
    const std::vector<double> p = point(s, o, kMaxHorizon);
    for (int k = 0; k < kBlocks; ++k) {
      double pm = 0, am = 0;
      for (int j = 0; j < kBlock; ++j) {
        pm += p[static_cast<size_t>(k * kBlock + j)];
        am += s.arrivals[o + static_cast<size_t>(k * kBlock + j)];
      }
      res[static_cast<size_t>(k)].push_back(std::sqrt(am / kBlock) -
                                            std::sqrt(std::max(0.0, pm / kBlock)));
    }
  }
  if (res[0].size() < 10) return b;
  for (size_t k = 0; k < kBlocks; ++k) {
    b.q10[k] = Quantile(res[k], 0.10);
    b.q50[k] = Quantile(res[k], 0.50);
    b.q90[k] = Quantile(res[k], 0.90);
  }
  b.calibrated = true;
  return b;
}

absl::Status PointForecaster::Fit(const Series& history) {
  if (absl::Status st = FitPoint(history); !st.ok()) return st;
  bands_ =
      Calibrate(history, [this](const Series& s, size_t end, int h) { return Point(s, end, h); });
  return absl::OkStatus();
}

absl::StatusOr<Forecast> PointForecaster::Predict(const Series& recent, int horizon) const {
  if (horizon < 1 || horizon > kMaxHorizon) {
    return absl::InvalidArgumentError(
        absl::StrCat("horizon: must be 1..", kMaxHorizon, " minutes, got ", horizon));
  }
  Forecast f;
  f.model = std::string(name());
  const std::vector<double> p = Point(recent, recent.size(), horizon);
  f.minutes.resize(static_cast<size_t>(horizon));
  for (int h = 1; h <= horizon; ++h) {
    const double point = std::max(0.0, p[static_cast<size_t>(h - 1)]);
    Quantiles& q = f.minutes[static_cast<size_t>(h - 1)];
    q.mean = point;
    const size_t k = static_cast<size_t>((h - 1) / kBlock);
    const double r = std::sqrt(point);
    if (bands_.calibrated) {
      auto at = [&](double d) { return std::pow(std::max(0.0, r + d), 2); };
      q.p10 = at(bands_.q10[k]);
      q.p50 = at(bands_.q50[k]);
      q.p90 = at(bands_.q90[k]);
    } else {
      // Uncalibrated (a short history): a wide band, +-1.5 in sqrt space (about +-1.5
      // standard deviations of a Poisson count's square root, times three).
      q.p10 = std::pow(std::max(0.0, r - 1.5), 2);
      q.p50 = point;
      q.p90 = std::pow(r + 1.5, 2);
    }
    q.p50 = std::clamp(q.p50, q.p10, std::max(q.p10, q.p90));
    q.p90 = std::max(q.p90, q.p50);
  }
  return f;
}

// --- seasonal naive ----------------------------------------------------------------------

std::vector<double> SeasonalNaive::Point(const Series& s, size_t end, int horizon) const {
  std::vector<double> out(static_cast<size_t>(horizon), 0);
  if (end == 0) return out;
  const size_t hour = std::min<size_t>(60, end);
  double recent = 0;
  for (size_t i = end - hour; i < end; ++i) recent += s.arrivals[i];
  if (end < static_cast<size_t>(kMinutesPerDay) + 60) {
    std::fill(out.begin(), out.end(), recent / static_cast<double>(hour));
    return out;
  }
  // The seasonal value of minute i: the mean of the day-ago and week-ago neighbourhoods.
  auto seasonal = [&](int64_t i) {
    const double day = Around(s, i - kMinutesPerDay, end);
    const double week = Around(s, i - kMinutesPerWeek, end);
    if (week >= 0 && day >= 0) return 0.5 * (day + week);
    return std::max(0.0, day);
  };
  double base = 0;
  for (size_t i = end - hour; i < end; ++i) base += seasonal(static_cast<int64_t>(i));
  // +1 on both sides keeps a quiet hour from producing an absurd ratio.
  const double level = std::clamp((recent + 1) / (base + 1), 0.25, 4.0);
  for (int h = 1; h <= horizon; ++h) {
    out[static_cast<size_t>(h - 1)] = level * seasonal(static_cast<int64_t>(end) - 1 + h);
  }
  return out;
}

// --- Holt-Winters ------------------------------------------------------------------------

std::vector<double> HoltWinters::Blocks(const Series& s, size_t end) const {
  std::vector<double> y(end / kBlock);
  for (size_t k = 0; k < y.size(); ++k) {
    double sum = 0;
    for (int j = 0; j < kBlock; ++j) sum += s.arrivals[k * kBlock + static_cast<size_t>(j)];
    y[k] = std::sqrt(sum / kBlock);
  }
  return y;
}

HoltWinters::State HoltWinters::Init(const Params& p, const std::vector<double>& y,
                                     size_t from) const {
  State st;
  st.day.assign(kDayBlocks, 0);
  if (p.weekly) st.week.assign(kWeekBlocks, 0);
  // Level: the mean of the first day of the window; season: that day's deviations.
  const size_t n = std::min<size_t>(kDayBlocks, y.size() - from);
  double mean = 0;
  for (size_t k = 0; k < n; ++k) mean += y[from + k];
  mean /= static_cast<double>(std::max<size_t>(1, n));
  st.level = mean;
  if (n == kDayBlocks) {
    for (size_t k = 0; k < n; ++k) {
      st.day[static_cast<size_t>((phase_ + static_cast<int64_t>(from + k)) % kDayBlocks)] =
          y[from + k] - mean;
    }
  }
  st.blocks = from;
  return st;
}

void HoltWinters::Advance(const Params& p, const std::vector<double>& y,
                          size_t /*first_block_of_day*/, size_t upto, State& st,
                          double* sse) const {
  static constexpr int kSteps[] = {1, 3, 6, 12};
  for (size_t k = st.blocks; k < upto; ++k) {
    const size_t di = static_cast<size_t>((phase_ + static_cast<int64_t>(k)) % kDayBlocks);
    const size_t wi = static_cast<size_t>((phase_ + static_cast<int64_t>(k)) % kWeekBlocks);
    const double w = p.weekly ? st.week[wi] : 0;
    if (sse != nullptr) {
      // Multi-step errors of forecasts made before this block's value is known.
      double damp = 0, f = 1;
      int next = 0;
      for (int j = 1; j <= 12; ++j) {
        f *= p.phi;
        damp += f;
        if (j != kSteps[next]) continue;
        ++next;
        const size_t t = k + static_cast<size_t>(j) - 1;
        if (t >= upto) break;
        const size_t dt = static_cast<size_t>((phase_ + static_cast<int64_t>(t)) % kDayBlocks);
        const size_t wt = static_cast<size_t>((phase_ + static_cast<int64_t>(t)) % kWeekBlocks);
        const double fc = st.level + damp * st.trend + st.day[dt] + (p.weekly ? st.week[wt] : 0);
        const double e = y[t] - fc;
        *sse += e * e;
      }
    }
    const double prev = st.level;
    st.level = p.alpha * (y[k] - st.day[di] - w) + (1 - p.alpha) * (st.level + p.phi * st.trend);
    st.trend = p.beta * (st.level - prev) + (1 - p.beta) * p.phi * st.trend;
    st.day[di] = p.gamma * (y[k] - st.level - w) + (1 - p.gamma) * st.day[di];
    if (p.weekly) st.week[wi] = p.delta * (y[k] - st.level - st.day[di]) + (1 - p.delta) * w;
  }
  st.blocks = std::max(st.blocks, upto);
}

absl::Status HoltWinters::FitPoint(const Series& history) {
  phase_ = history.start_minute / kBlock;
  const std::vector<double> y = Blocks(history, history.size());
  const size_t window = static_cast<size_t>(options_.fit_minutes / kBlock);
  fit_from_ = y.size() > window ? y.size() - window : 0;
  Params best;
  best.weekly = options_.weekly && y.size() - fit_from_ >= 2 * kWeekBlocks;
  if (y.size() - fit_from_ < 2 * kDayBlocks) {
    // Too short to fit: a level that follows quickly, no season learnt yet.
    best.alpha = 0.3;
    best.gamma = 0.1;
  } else {
    double best_sse = std::numeric_limits<double>::infinity();
    for (double alpha : {0.02, 0.05, 0.1, 0.2, 0.35, 0.5}) {
      for (double beta : {0.0, 0.01, 0.05}) {
        for (double gamma : {0.05, 0.1, 0.2, 0.35}) {
          Params p = best;
          p.alpha = alpha;
          p.beta = beta;
          p.gamma = gamma;
          State st = Init(p, y, fit_from_);
          // The first day initialises the season; errors count from the second.
          Advance(p, y, 0, fit_from_ + kDayBlocks, st, nullptr);
          double sse = 0;
          Advance(p, y, 0, y.size(), st, &sse);
          if (sse < best_sse) {
            best_sse = sse;
            best = p;
          }
        }
      }
    }
  }
  params_ = best;
  fitted_ = Init(params_, y, fit_from_);
  Advance(params_, y, 0, y.size(), fitted_, nullptr);
  cache_ = fitted_;
  return absl::OkStatus();
}

std::vector<double> HoltWinters::Point(const Series& s, size_t end, int horizon) const {
  std::vector<double> out(static_cast<size_t>(horizon), 0);
  const size_t complete = end / kBlock;
  // Predict runs on histories at least as long as the fitted one (the calibration replays
  // shorter prefixes: those restart from the fitted state's start, which is slower but
  // only happens in Fit).
  State local;
  State* st = &cache_;
  if (complete < cache_.blocks) {
    if (complete < fitted_.blocks) {
      const std::vector<double> y = Blocks(s, end);
      local = Init(params_, y, fit_from_ < complete ? fit_from_ : 0);
      if (y.size() > local.blocks) Advance(params_, y, 0, y.size(), local, nullptr);
      st = &local;
    } else {
      cache_ = fitted_;
    }
  }
  if (st == &cache_ && complete > cache_.blocks) {
    // Only the new blocks: their means from the series.
    std::vector<double> y(complete, 0);
    for (size_t k = cache_.blocks; k < complete; ++k) {
      double sum = 0;
      for (int j = 0; j < kBlock; ++j) sum += s.arrivals[k * kBlock + static_cast<size_t>(j)];
      y[k] = std::sqrt(sum / kBlock);
    }
    Advance(params_, y, 0, complete, cache_, nullptr);
  }
  if (st->day.empty()) return out;
  for (int h = 1; h <= horizon; ++h) {
    const size_t t = end - 1 + static_cast<size_t>(h);  // the target minute's index
    const size_t kb = t / kBlock;
    const int steps = static_cast<int>(kb + 1 - st->blocks);
    double damp = 0, f = 1;
    for (int j = 1; j <= steps; ++j) {
      f *= params_.phi;
      damp += f;
    }
    const size_t di = static_cast<size_t>((phase_ + static_cast<int64_t>(kb)) % kDayBlocks);
    const size_t wi = static_cast<size_t>((phase_ + static_cast<int64_t>(kb)) % kWeekBlocks);
    const double v =
        st->level + damp * st->trend + st->day[di] + (params_.weekly ? st->week[wi] : 0);
    out[static_cast<size_t>(h - 1)] = v > 0 ? v * v : 0;
  }
  return out;
}

}  // namespace drover::scale
