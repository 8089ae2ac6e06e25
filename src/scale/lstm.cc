#include "scale/lstm.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/rnn.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>
#include <torch/utils.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numbers>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "util/file.h"

namespace drover::scale {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the saved-model format is written and read as the host's bytes: little-endian");

constexpr int kBlockMinutes = 5;
constexpr int kBlocks = kMaxHorizon / kBlockMinutes;  // 12 blocks cover minutes 1..60
// Per block: mean, p10, p50, p90 (the order of the network's decoded output).
constexpr int kOutputs = 4;
constexpr double kQuantiles[3] = {0.1, 0.5, 0.9};
// Features per step: level, sin/cos minute of day, sin/cos position in the week, queue.
constexpr int kFeatures = 6;
// The weight of the mean's squared error next to the three pinball losses: both are in
// units of a standard deviation, the pinball ones are about a quarter of the squared one.
constexpr double kMeanWeight = 0.5;
// The level the p50 and the mean are offsets from: the last 15 minutes.
constexpr int kLevelMinutes = 15;
// Fewer training windows than this and Fit keeps the empirical fallback (see lstm.h).
constexpr int64_t kMinWindows = 64;
// Validation: the last tenth of the windows, when there are enough to spare them.
constexpr double kValidationFraction = 0.1;
constexpr int64_t kMinWindowsForValidation = 200;
// Floors for the standardisation, so that a constant (e.g. all-zero) history gives
// finite inputs: 0.1 in log1p units is a 10 % change of the rate.
constexpr double kLogSigmaFloor = 0.1;
constexpr double kScaleFloor = 0.1;
// Forecasts are computed as expm1(mu + sigma * z); capping the exponent keeps an untrained
// or extrapolating network finite (e^30 is 1e13 arrivals a minute).
constexpr double kMaxLog = 30;
constexpr double kGradientClip = 1.0;
constexpr int64_t kEvalChunk = 1024;

constexpr char kMagic[8] = {'D', 'R', 'V', 'R', 'L', 'S', 'T', 'M'};
constexpr size_t kHeaderBytes = sizeof(kMagic) + sizeof(uint32_t) + sizeof(uint64_t);
constexpr size_t kChecksumBytes = sizeof(uint64_t);

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

int64_t PosMod(int64_t a, int64_t n) { return ((a % n) + n) % n; }

// How a training window's values are standardised; fixed by Fit, kept by Refit (the
// weights only make sense with the scaling they were trained with).
struct Normalisation {
  double mu = 0, sigma = 1;      // log1p(arrivals per minute)
  double scale = 1;              // standard deviation of arrivals per minute
  double q_mu = 0, q_sigma = 1;  // log1p(queue)
  bool has_queue = false;
};

// The minutes a training run learns from, or the minutes Predict reads.
struct View {
  const double* arrivals = nullptr;
  const double* queue = nullptr;  // null: no queue
  int64_t size = 0;
  int64_t start_minute = 0;  // calendar minute of arrivals[0]
};

View Tail(const Series& s, int64_t minutes) {
  const int64_t n = static_cast<int64_t>(s.size());
  const int64_t begin = n - std::min(n, minutes);
  View v;
  v.arrivals = s.arrivals.data() + begin;
  v.queue = s.queue.size() == s.size() && !s.queue.empty() ? s.queue.data() + begin : nullptr;
  v.size = n - begin;
  v.start_minute = s.start_minute + begin;
  return v;
}

// The features of the step that ends at index `end` of `v`. A step that starts before the
// view averages the minutes it has; one that ends before it is an average step (level 0),
// with the calendar it would have had.
void StepFeatures(const View& v, int64_t end, int step, const Normalisation& n, float* out) {
  double level = 0, queue = 0;
  if (end >= 0) {
    const int64_t begin = std::max<int64_t>(0, end - step + 1);
    double sum = 0;
    for (int64_t i = begin; i <= end; ++i) sum += v.arrivals[i];
    level = (std::log1p(sum / static_cast<double>(end - begin + 1)) - n.mu) / n.sigma;
    if (v.queue != nullptr && n.has_queue) {
      queue = (std::log1p(std::max(0.0, v.queue[end])) - n.q_mu) / n.q_sigma;
    }
  }
  const int64_t minute = v.start_minute + end;
  const double day =
      2 * std::numbers::pi * static_cast<double>(PosMod(minute, kMinutesPerDay)) / kMinutesPerDay;
  const double week =
      2 * std::numbers::pi * static_cast<double>(PosMod(minute, kMinutesPerWeek)) / kMinutesPerWeek;
  out[0] = static_cast<float>(level);
  out[1] = static_cast<float>(std::sin(day));
  out[2] = static_cast<float>(std::cos(day));
  out[3] = static_cast<float>(std::sin(week));
  out[4] = static_cast<float>(std::cos(week));
  out[5] = static_cast<float>(queue);
}

// Mean and standard deviation of log1p(x) over x[0..n).
std::pair<double, double> LogMoments(const double* x, int64_t n) {
  double sum = 0, sum2 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double l = std::log1p(std::max(0.0, x[i]));
    sum += l;
    sum2 += l * l;
  }
  const double mean = n > 0 ? sum / static_cast<double>(n) : 0;
  const double var = n > 0 ? std::max(0.0, sum2 / static_cast<double>(n) - mean * mean) : 0;
  return {mean, std::sqrt(var)};
}

Normalisation Normalise(const View& v) {
  Normalisation n;
  auto [mu, sigma] = LogMoments(v.arrivals, v.size);
  n.mu = mu;
  n.sigma = std::max(sigma, kLogSigmaFloor);
  double sum = 0, sum2 = 0;
  for (int64_t i = 0; i < v.size; ++i) {
    sum += v.arrivals[i];
    sum2 += v.arrivals[i] * v.arrivals[i];
  }
  const double mean = sum / static_cast<double>(std::max<int64_t>(1, v.size));
  n.scale =
      std::max(std::sqrt(std::max(
                   0.0, sum2 / static_cast<double>(std::max<int64_t>(1, v.size)) - mean * mean)),
               kScaleFloor);
  if (v.queue != nullptr) {
    auto [q_mu, q_sigma] = LogMoments(v.queue, v.size);
    n.has_queue = true;
    n.q_mu = q_mu;
    n.q_sigma = std::max(q_sigma, kLogSigmaFloor);
  }
  return n;
}

// The network: LSTM -> additive attention queried by the last output -> linear head.
class NetImpl : public torch::nn::Module {
 public:
  NetImpl(int hidden, int level_steps) : level_steps_(level_steps) {
    namespace nn = torch::nn;
    lstm_ = register_module("lstm", nn::LSTM(nn::LSTMOptions(kFeatures, hidden).batch_first(true)));
    key_ = register_module("key", nn::Linear(nn::LinearOptions(hidden, hidden).bias(false)));
    query_ = register_module("query", nn::Linear(hidden, hidden));
    score_ = register_module("score", nn::Linear(nn::LinearOptions(hidden, 1).bias(false)));
    head_ = register_module("head", nn::Linear(2 * hidden, kBlocks * kOutputs));
  }

  // x: [batch, steps, kFeatures] -> [batch, kBlocks, kOutputs]: mean, p10, p50, p90 of each
  // block in standardised log1p units.
  torch::Tensor forward(const torch::Tensor& x) {
    const torch::Tensor out = std::get<0>(lstm_->forward(x));   // [B, T, H]
    const torch::Tensor last = out.select(1, out.size(1) - 1);  // [B, H]
    const torch::Tensor energy =
        score_->forward(torch::tanh(key_->forward(out) + query_->forward(last).unsqueeze(1)))
            .squeeze(2);                                                             // [B, T]
    const torch::Tensor weights = torch::softmax(energy, 1);                         // [B, T]
    const torch::Tensor context = torch::bmm(weights.unsqueeze(1), out).squeeze(1);  // [B, H]
    const torch::Tensor raw =
        head_->forward(torch::cat({context, last}, 1)).view({-1, kBlocks, kOutputs});
    // Offsets from the recent level: the network only learns how the next hour differs
    // from the last 15 minutes, which it gets right far sooner than the absolute level.
    const torch::Tensor level =
        x.narrow(1, x.size(1) - level_steps_, level_steps_).select(2, 0).mean(1, true);
    const torch::Tensor p50 = level + raw.select(2, 0);
    const torch::Tensor p10 = p50 - torch::softplus(raw.select(2, 1));
    const torch::Tensor p90 = p50 + torch::softplus(raw.select(2, 2));
    const torch::Tensor mean = level + raw.select(2, 3);
    return torch::stack({mean, p10, p50, p90}, 2);
  }

 private:
  int level_steps_;
  torch::nn::LSTM lstm_{nullptr};
  torch::nn::Linear key_{nullptr}, query_{nullptr}, score_{nullptr}, head_{nullptr};
};
TORCH_MODULE(Net);

int Steps(const LstmOptions& o) { return o.lookback / o.step_minutes; }

Net MakeNet(const LstmOptions& o) {
  const int steps = Steps(o);
  const int level_steps = std::clamp(kLevelMinutes / o.step_minutes, 1, steps);
  return Net(o.hidden, level_steps);
}

// Torch's default initialisation bounds (1/sqrt(fan-in), 1/sqrt(hidden) for the LSTM), but
// drawn from our generator so that Fit depends on the seed only. The forget gate starts
// open (bias 1): the LSTM carries the level through the lookback from the first epoch.
void InitWeights(Net& net, const LstmOptions& o, at::Generator& gen) {
  torch::NoGradGuard no_grad;
  auto params = net->named_parameters();
  for (auto& item : params) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    double fan_in = o.hidden;
    if (name.rfind("lstm.", 0) != 0) {
      const std::string weight = name.substr(0, name.rfind('.')) + ".weight";
      fan_in = static_cast<double>(params[weight].size(1));
    }
    const double bound = 1 / std::sqrt(fan_in);
    p.uniform_(-bound, bound, gen);
  }
  params["lstm.bias_ih_l0"].narrow(0, o.hidden, o.hidden).fill_(1.0);
  params["lstm.bias_hh_l0"].narrow(0, o.hidden, o.hidden).fill_(0.0);
}

// Everything a training run samples its windows from.
struct Dataset {
  torch::Tensor features;  // [n, kFeatures]: row i is the step that ends at minute i
  torch::Tensor minute_z;  // [n]: standardised log1p(arrivals)
  torch::Tensor arrivals;  // [n]
  torch::Tensor train;     // origins (int64): the window reads minutes before, predicts from
  torch::Tensor val;
  torch::Tensor input_offsets;   // [steps]: step ends relative to the origin
  torch::Tensor target_offsets;  // [kMaxHorizon]
  int64_t windows = 0;
};

// Windows of `v` every `stride` minutes (fewer than kMinWindows: an empty dataset).
Dataset MakeDataset(const View& v, const LstmOptions& o, const Normalisation& n) {
  Dataset d;
  const int64_t first = o.lookback, last = v.size - kMaxHorizon;
  const int64_t possible = last - first + 1;
  if (possible < kMinWindows) return d;
  // A short history samples densely rather than dropping below kMinWindows.
  const int64_t stride = std::max<int64_t>(1, std::min<int64_t>(o.stride, possible / kMinWindows));
  std::vector<int64_t> origins;
  for (int64_t t = first; t <= last; t += stride) origins.push_back(t);
  d.windows = static_cast<int64_t>(origins.size());

  std::vector<int64_t> train = origins, val;
  if (d.windows >= kMinWindowsForValidation) {
    const size_t n_val = static_cast<size_t>(std::ceil(kValidationFraction * d.windows));
    val.assign(origins.end() - n_val, origins.end());
    // Training windows end (targets included) before the first validation window begins.
    const int64_t limit = val.front() - o.lookback - kMaxHorizon;
    train.clear();
    for (int64_t t : origins) {
      if (t <= limit) train.push_back(t);
    }
  }
  // Too few left to learn from: validate on the training windows themselves.
  if (static_cast<int64_t>(train.size()) < kMinWindows) {
    train = origins;
    val.clear();
  }
  if (val.empty()) val = train;

  std::vector<float> features(static_cast<size_t>(v.size) * kFeatures);
  std::vector<float> minute_z(v.size), arrivals(v.size);
  for (int64_t i = 0; i < v.size; ++i) {
    StepFeatures(v, i, o.step_minutes, n, &features[static_cast<size_t>(i) * kFeatures]);
    minute_z[i] = static_cast<float>((std::log1p(v.arrivals[i]) - n.mu) / n.sigma);
    arrivals[i] = static_cast<float>(v.arrivals[i]);
  }
  d.features = torch::tensor(features).view({v.size, kFeatures});
  d.minute_z = torch::tensor(minute_z);
  d.arrivals = torch::tensor(arrivals);
  d.train = torch::tensor(train, torch::kLong);
  d.val = torch::tensor(val, torch::kLong);
  const int steps = Steps(o);
  d.input_offsets = -1 - o.step_minutes * (steps - 1 - torch::arange(steps, torch::kLong));
  d.target_offsets = torch::arange(kMaxHorizon, torch::kLong);
  return d;
}

struct Batch {
  torch::Tensor x;           // [B, steps, kFeatures]
  torch::Tensor minute_z;    // [B, kBlocks, kBlockMinutes]
  torch::Tensor block_mean;  // [B, kBlocks]
};

Batch MakeBatch(const Dataset& d, const torch::Tensor& origins) {
  const int64_t b = origins.size(0);
  const torch::Tensor in = (origins.unsqueeze(1) + d.input_offsets).flatten();
  const torch::Tensor out = (origins.unsqueeze(1) + d.target_offsets).flatten();
  Batch batch;
  batch.x = d.features.index_select(0, in).view({b, -1, kFeatures});
  batch.minute_z = d.minute_z.index_select(0, out).view({b, kBlocks, kBlockMinutes});
  batch.block_mean = d.arrivals.index_select(0, out).view({b, kBlocks, kBlockMinutes}).mean(2);
  return batch;
}

// Pinball loss of the three quantiles against every minute of their block, plus the
// squared error of the block's mean rate in units of the history's standard deviation.
torch::Tensor Loss(const torch::Tensor& pred, const Batch& batch, const Normalisation& n) {
  const torch::Tensor mean =
      torch::expm1(torch::clamp_max(n.mu + n.sigma * pred.select(2, 0), kMaxLog));
  torch::Tensor loss = kMeanWeight * ((mean - batch.block_mean) / n.scale).pow(2).mean();
  for (int k = 0; k < 3; ++k) {
    const torch::Tensor diff = batch.minute_z - pred.select(2, k + 1).unsqueeze(2);
    loss = loss + torch::max(kQuantiles[k] * diff, (kQuantiles[k] - 1) * diff).mean();
  }
  return loss;
}

double EvalLoss(Net& net, const Dataset& d, const Normalisation& n) {
  torch::NoGradGuard no_grad;
  double total = 0;
  const int64_t count = d.val.size(0);
  for (int64_t i = 0; i < count; i += kEvalChunk) {
    const int64_t len = std::min(kEvalChunk, count - i);
    const Batch batch = MakeBatch(d, d.val.narrow(0, i, len));
    total += Loss(net->forward(batch.x), batch, n).item<double>() * static_cast<double>(len);
  }
  return total / static_cast<double>(std::max<int64_t>(1, count));
}

struct TrainResult {
  double loss = 0;
  int epochs = 0;
};

// Mini-batch Adam from the net's current weights; returns with the weights of the best
// validation loss seen (the starting weights included). Stops after `epochs`, after
// `patience` epochs without improvement, or when the next batch (and the validation after
// it) would end past `budget_seconds` since `start`.
TrainResult Train(Net& net, const Dataset& d, const Normalisation& n, const LstmOptions& o,
                  double learning_rate, int epochs, int patience, double budget_seconds,
                  Clock::time_point start, at::Generator& gen) {
  net->train();
  std::vector<torch::Tensor> params = net->parameters();
  auto snapshot = [&params] {
    std::vector<torch::Tensor> copy;
    copy.reserve(params.size());
    for (const torch::Tensor& p : params) copy.push_back(p.detach().clone());
    return copy;
  };
  Clock::time_point t = Clock::now();
  TrainResult result;
  result.loss = EvalLoss(net, d, n);
  double eval_seconds = SecondsSince(t);
  std::vector<torch::Tensor> best = snapshot();
  torch::optim::Adam adam(params, torch::optim::AdamOptions(learning_rate));
  double batch_seconds = 0;  // the slowest batch so far
  bool out_of_time = false, diverged = false;
  int without_improvement = 0;
  const int64_t count = d.train.size(0);
  for (int epoch = 0; epoch < epochs && !out_of_time && !diverged; ++epoch) {
    const torch::Tensor order = d.train.index_select(0, torch::randperm(count, gen, torch::kLong));
    for (int64_t i = 0; i < count; i += o.batch) {
      if (SecondsSince(start) + 1.5 * batch_seconds + eval_seconds > budget_seconds) {
        out_of_time = true;
        break;
      }
      t = Clock::now();
      const Batch batch = MakeBatch(d, order.narrow(0, i, std::min<int64_t>(o.batch, count - i)));
      adam.zero_grad();
      const torch::Tensor loss = Loss(net->forward(batch.x), batch, n);
      if (!std::isfinite(loss.item<double>())) {
        diverged = true;
        break;
      }
      loss.backward();
      torch::nn::utils::clip_grad_norm_(params, kGradientClip);
      adam.step();
      batch_seconds = std::max(batch_seconds, SecondsSince(t));
    }
    if (diverged) break;
    // A cut-short epoch still counts when there is time to validate it.
    if (out_of_time && SecondsSince(start) + eval_seconds > budget_seconds) break;
    t = Clock::now();
    const double loss = EvalLoss(net, d, n);
    eval_seconds = SecondsSince(t);
    if (!out_of_time) ++result.epochs;
    if (loss < result.loss) {
      result.loss = loss;
      best = snapshot();
      without_improvement = 0;
    } else if (++without_improvement >= patience) {
      break;
    }
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) params[i].copy_(best[i]);
  net->eval();
  return result;
}

absl::Status ValidateSeries(const Series& s, absl::string_view what) {
  if (!s.queue.empty() && s.queue.size() != s.arrivals.size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ".queue: has ", s.queue.size(),
                                                   " entries, arrivals has ", s.arrivals.size(),
                                                   " (must be equal, or the queue empty)"));
  }
  for (size_t i = 0; i < s.arrivals.size(); ++i) {
    if (!std::isfinite(s.arrivals[i]) || s.arrivals[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ".arrivals[", i, "]: must be finite and >= 0, got ", s.arrivals[i]));
    }
  }
  for (size_t i = 0; i < s.queue.size(); ++i) {
    if (!std::isfinite(s.queue[i]) || s.queue[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ".queue[", i, "]: must be finite and >= 0, got ", s.queue[i]));
    }
  }
  return absl::OkStatus();
}

// p-quantile of sorted values, interpolating between order statistics.
double SortedQuantile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double pos = p * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

uint64_t Fnv1a64(absl::string_view bytes) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

class Writer {
 public:
  template <typename T>
  void Put(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out_.append(b, sizeof(T));
  }
  void Append(const void* data, size_t n) { out_.append(static_cast<const char*>(data), n); }
  std::string& bytes() { return out_; }

 private:
  std::string out_;
};

// Reads the (checksummed) payload; running out means the writer and reader disagree.
class Reader {
 public:
  Reader(absl::string_view data, absl::string_view path) : data_(data), path_(path) {}
  template <typename T>
  absl::Status Get(T& v, absl::string_view field) {
    if (data_.size() - pos_ < sizeof(T)) return Short(field);
    std::memcpy(&v, data_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }
  absl::Status Take(size_t n, absl::string_view field, absl::string_view& out) {
    if (data_.size() - pos_ < n) return Short(field);
    out = data_.substr(pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }
  size_t remaining() const { return data_.size() - pos_; }

 private:
  absl::Status Short(absl::string_view field) const {
    return absl::DataLossError(
        absl::StrCat("lstm model ", path_, ": corrupt payload: it ends inside ", field));
  }
  absl::string_view data_;
  absl::string_view path_;
  size_t pos_ = 0;
};

#define DROVER_LSTM_RETURN_IF_ERROR(expr) \
  do {                                    \
    absl::Status _st = (expr);            \
    if (!_st.ok()) return _st;            \
  } while (false)

}  // namespace

absl::Status ValidateLstmOptions(const LstmOptions& o) {
  auto bad = [](absl::string_view field, absl::string_view rule, auto got) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": must be ", rule, ", got ", got));
  };
  if (o.step_minutes < 1 || o.step_minutes > kMaxHorizon) {
    return bad("step_minutes", "in 1..60", o.step_minutes);
  }
  if (o.lookback < o.step_minutes || o.lookback > kMinutesPerWeek ||
      o.lookback % o.step_minutes != 0) {
    return bad("lookback",
               absl::StrCat("a multiple of step_minutes (", o.step_minutes, ") in ", o.step_minutes,
                            "..", kMinutesPerWeek),
               o.lookback);
  }
  if (o.hidden < 1 || o.hidden > 1024) return bad("hidden", "in 1..1024", o.hidden);
  if (o.epochs < 1) return bad("epochs", ">= 1", o.epochs);
  if (o.patience < 1) return bad("patience", ">= 1", o.patience);
  if (o.batch < 1 || o.batch > 65536) return bad("batch", "in 1..65536", o.batch);
  if (o.stride < 1 || o.stride > kMinutesPerDay) return bad("stride", "in 1..1440", o.stride);
  if (!(o.learning_rate > 0) || !std::isfinite(o.learning_rate)) {
    return bad("learning_rate", "> 0 and finite", o.learning_rate);
  }
  if (!(o.max_train_seconds > 0)) return bad("max_train_seconds", "> 0", o.max_train_seconds);
  if (o.threads < 1 || o.threads > 256) return bad("threads", "in 1..256", o.threads);
  if (o.max_train_minutes < 1) return bad("max_train_minutes", ">= 1", o.max_train_minutes);
  if (o.refit_minutes < 1) return bad("refit_minutes", ">= 1", o.refit_minutes);
  if (o.refit_epochs < 1) return bad("refit_epochs", ">= 1", o.refit_epochs);
  if (!(o.refit_learning_rate > 0) || !std::isfinite(o.refit_learning_rate)) {
    return bad("refit_learning_rate", "> 0 and finite", o.refit_learning_rate);
  }
  if (!(o.refit_max_seconds > 0)) return bad("refit_max_seconds", "> 0", o.refit_max_seconds);
  return absl::OkStatus();
}

struct LstmForecaster::Impl {
  LstmOptions options;
  Normalisation norm;
  Net net{nullptr};     // null: not trained (never fitted, or the short-history fallback)
  bool fitted = false;  // Fit or Load succeeded (with or without a network)
  Info info;
  int64_t full_fit_minutes = 0;  // the history's length at the last Fit (Update's rule)
};

LstmForecaster::LstmForecaster(LstmOptions o) : impl_(std::make_unique<Impl>()) {
  impl_->options = o;
}
LstmForecaster::~LstmForecaster() = default;
LstmForecaster::LstmForecaster(LstmForecaster&&) noexcept = default;
LstmForecaster& LstmForecaster::operator=(LstmForecaster&&) noexcept = default;

bool LstmForecaster::trained() const { return !impl_->net.is_empty(); }
const LstmOptions& LstmForecaster::options() const { return impl_->options; }
LstmForecaster::Info LstmForecaster::info() const { return impl_->info; }

absl::Status LstmForecaster::Fit(const Series& history) {
  const Clock::time_point start = Clock::now();
  const LstmOptions& o = impl_->options;
  DROVER_LSTM_RETURN_IF_ERROR(ValidateLstmOptions(o));
  DROVER_LSTM_RETURN_IF_ERROR(ValidateSeries(history, "history"));
  at::set_num_threads(o.threads);

  const View window = Tail(history, o.max_train_minutes);
  Info info;
  info.first_minute = window.start_minute;
  info.last_minute = window.start_minute + window.size - 1;
  info.minutes = window.size;
  const Normalisation norm = Normalise(window);
  const Dataset data = MakeDataset(window, o, norm);
  if (data.windows == 0) {
    // Too short to train on: the empirical fallback (see lstm.h).
    impl_->net = Net(nullptr);
    impl_->norm = norm;
    impl_->fitted = true;
    info.train_seconds = SecondsSince(start);
    impl_->info = info;
    return absl::OkStatus();
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  Net net = MakeNet(o);
  InitWeights(net, o, gen);
  const TrainResult r = Train(net, data, norm, o, o.learning_rate, o.epochs, o.patience,
                              o.max_train_seconds, start, gen);
  impl_->net = net;
  impl_->norm = norm;
  impl_->fitted = true;
  info.loss = r.loss;
  info.epochs = r.epochs;
  info.train_seconds = SecondsSince(start);
  impl_->info = info;
  impl_->full_fit_minutes = static_cast<int64_t>(history.size());
  return absl::OkStatus();
}

absl::Status LstmForecaster::Refit(const Series& history) {
  if (!trained()) return Fit(history);
  const Clock::time_point start = Clock::now();
  const LstmOptions& o = impl_->options;
  DROVER_LSTM_RETURN_IF_ERROR(ValidateSeries(history, "history"));
  at::set_num_threads(o.threads);
  // At least enough minutes for kMinWindows windows, when the history has them.
  const View window =
      Tail(history, std::max<int64_t>(o.refit_minutes, o.lookback + kMaxHorizon + kMinWindows));
  const Dataset data = MakeDataset(window, o, impl_->norm);
  if (data.windows == 0) return absl::OkStatus();  // nothing new to learn from: keep the weights
  // A seed per refit: the sequence Fit, Refit, Refit... is reproducible.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(
      o.seed + 1 + static_cast<uint64_t>(impl_->info.refits));
  const TrainResult r = Train(impl_->net, data, impl_->norm, o, o.refit_learning_rate,
                              o.refit_epochs, o.refit_epochs, o.refit_max_seconds, start, gen);
  Info& info = impl_->info;
  info.first_minute = window.start_minute;
  info.last_minute = window.start_minute + window.size - 1;
  info.minutes = window.size;
  info.loss = r.loss;
  info.epochs = r.epochs;
  info.train_seconds = SecondsSince(start);
  ++info.refits;
  return absl::OkStatus();
}

std::unique_ptr<Forecaster> LstmForecaster::Clone() const {
  if (!trained()) return nullptr;
  auto copy = std::make_unique<LstmForecaster>(impl_->options);
  if (!copy->Deserialize(Serialize(), "(copy)").ok()) return nullptr;
  copy->impl_->full_fit_minutes = impl_->full_fit_minutes;
  return copy;
}

absl::Status LstmForecaster::Update(const Series& history) {
  // Afresh while the history is young (each time it has grown fourfold: 4 h, 16 h, 64 h,
  // ~11 days of minutes, then the training window is full), else a warm start.
  if (!trained() ||
      static_cast<int64_t>(history.size()) >= kFullFitGrowth * impl_->full_fit_minutes) {
    absl::Status st = Fit(history);
    if (st.ok()) impl_->full_fit_minutes = static_cast<int64_t>(history.size());
    return st;
  }
  return Refit(history);
}

absl::StatusOr<Forecast> LstmForecaster::Predict(const Series& recent, int horizon) const {
  if (horizon < 1 || horizon > kMaxHorizon) {
    return absl::InvalidArgumentError(
        absl::StrCat("horizon: must be in 1..", kMaxHorizon, ", got ", horizon));
  }
  if (!impl_->fitted) {
    return absl::FailedPreconditionError("lstm: Predict before Fit or Load");
  }
  const LstmOptions& o = impl_->options;
  if (!recent.queue.empty() && recent.queue.size() != recent.arrivals.size()) {
    return absl::InvalidArgumentError(absl::StrCat("recent.queue: has ", recent.queue.size(),
                                                   " entries, arrivals has ",
                                                   recent.arrivals.size()));
  }
  // Only the minutes the forecast reads are checked: Predict runs every sync.
  const View v = Tail(recent, o.lookback);
  for (int64_t i = 0; i < v.size; ++i) {
    const bool bad_arrivals = !std::isfinite(v.arrivals[i]) || v.arrivals[i] < 0;
    if (bad_arrivals || (v.queue != nullptr && !std::isfinite(v.queue[i]))) {
      const size_t index = recent.size() - static_cast<size_t>(v.size - i);
      return absl::InvalidArgumentError(absl::StrCat(
          "recent.", bad_arrivals ? "arrivals" : "queue", "[", index, "]: must be finite",
          bad_arrivals ? " and >= 0" : "", ", got ", bad_arrivals ? v.arrivals[i] : v.queue[i]));
    }
  }

  Forecast f;
  f.model = std::string(name());
  f.minutes.resize(horizon);
  if (!trained()) {
    std::vector<double> sorted(v.arrivals, v.arrivals + v.size);
    std::sort(sorted.begin(), sorted.end());
    Quantiles q;
    for (double a : sorted) q.mean += a;
    q.mean = sorted.empty() ? 0 : q.mean / static_cast<double>(sorted.size());
    q.p10 = SortedQuantile(sorted, 0.1);
    q.p50 = SortedQuantile(sorted, 0.5);
    q.p90 = SortedQuantile(sorted, 0.9);
    std::fill(f.minutes.begin(), f.minutes.end(), q);
    return f;
  }

  const int steps = Steps(o);
  std::vector<float> input(static_cast<size_t>(steps) * kFeatures);
  for (int k = 0; k < steps; ++k) {
    StepFeatures(v, v.size - 1 - static_cast<int64_t>(o.step_minutes) * (steps - 1 - k),
                 o.step_minutes, impl_->norm, &input[static_cast<size_t>(k) * kFeatures]);
  }
  double blocks[kBlocks][kOutputs];
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor x = torch::from_blob(input.data(), {1, steps, kFeatures}, torch::kFloat);
    const torch::Tensor out = impl_->net->forward(x).contiguous();
    const float* z = out.data_ptr<float>();
    const Normalisation& n = impl_->norm;
    for (int b = 0; b < kBlocks; ++b) {
      for (int k = 0; k < kOutputs; ++k) {
        const double log_value = std::min(n.mu + n.sigma * z[b * kOutputs + k], kMaxLog);
        blocks[b][k] = std::max(0.0, std::expm1(log_value));
      }
    }
  }
  // Block values belong to the block's centre minute (3, 8, ..., 58); minutes between
  // centres interpolate linearly, minutes outside them take the nearest block. A convex
  // combination of ordered, non-negative triples stays ordered and non-negative.
  for (int h = 1; h <= horizon; ++h) {
    const double pos = std::clamp((h - 3) / static_cast<double>(kBlockMinutes), 0.0,
                                  static_cast<double>(kBlocks - 1));
    const int lo = static_cast<int>(pos);
    const int hi = std::min(lo + 1, kBlocks - 1);
    const double w = pos - lo;
    auto mix = [&](int k) { return (1 - w) * blocks[lo][k] + w * blocks[hi][k]; };
    Quantiles& q = f.minutes[h - 1];
    q.mean = mix(0);
    q.p10 = mix(1);
    q.p50 = std::max(q.p10, mix(2));
    q.p90 = std::max(q.p50, mix(3));
  }
  return f;
}

std::string LstmForecaster::Serialize() const {
  const LstmOptions& o = impl_->options;
  const Info& info = impl_->info;
  const Normalisation& n = impl_->norm;
  Writer p;  // the payload
  p.Put<int32_t>(o.lookback);
  p.Put<int32_t>(o.step_minutes);
  p.Put<int32_t>(o.hidden);
  p.Put<int32_t>(o.epochs);
  p.Put<int32_t>(o.patience);
  p.Put<int32_t>(o.batch);
  p.Put<int32_t>(o.stride);
  p.Put<double>(o.learning_rate);
  p.Put<double>(o.max_train_seconds);
  p.Put<uint64_t>(o.seed);
  p.Put<int32_t>(o.threads);
  p.Put<int64_t>(o.max_train_minutes);
  p.Put<int64_t>(o.refit_minutes);
  p.Put<int32_t>(o.refit_epochs);
  p.Put<double>(o.refit_learning_rate);
  p.Put<double>(o.refit_max_seconds);
  p.Put<int64_t>(info.first_minute);
  p.Put<int64_t>(info.last_minute);
  p.Put<int64_t>(info.minutes);
  p.Put<double>(info.loss);
  p.Put<double>(info.train_seconds);
  p.Put<int32_t>(info.epochs);
  p.Put<int32_t>(info.refits);
  p.Put<double>(n.mu);
  p.Put<double>(n.sigma);
  p.Put<double>(n.scale);
  p.Put<double>(n.q_mu);
  p.Put<double>(n.q_sigma);
  p.Put<uint8_t>(n.has_queue ? 1 : 0);
  const auto params = impl_->net->named_parameters();
  p.Put<uint32_t>(static_cast<uint32_t>(params.size()));
  for (const auto& item : params) {
    const torch::Tensor t = item.value().detach().contiguous();
    p.Put<uint16_t>(static_cast<uint16_t>(item.key().size()));
    p.Append(item.key().data(), item.key().size());
    p.Put<uint8_t>(static_cast<uint8_t>(t.dim()));
    for (int64_t d : t.sizes()) p.Put<int64_t>(d);
    p.Append(t.data_ptr<float>(), static_cast<size_t>(t.numel()) * sizeof(float));
  }

  Writer file;
  file.Append(kMagic, sizeof(kMagic));
  file.Put<uint32_t>(kFormatVersion);
  file.Put<uint64_t>(p.bytes().size());
  file.Append(p.bytes().data(), p.bytes().size());
  file.Put<uint64_t>(Fnv1a64(file.bytes()));
  return std::string(file.bytes().data(), file.bytes().size());
}

absl::Status LstmForecaster::Save(const std::string& path) const {
  if (!trained()) {
    return absl::FailedPreconditionError(
        absl::StrCat("lstm model ", path,
                     ": nothing to save (no trained network: Fit found too short a history, "
                     "or was never called)"));
  }
  const std::string bytes = Serialize();
  // Written beside the target and renamed over it: a reader never sees half a model.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      return absl::UnavailableError(absl::StrCat("lstm model ", path, ": cannot write ", tmp));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return absl::UnavailableError(
        absl::StrCat("lstm model ", path, ": cannot rename ", tmp, " over it: ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status LstmForecaster::Load(const std::string& path) {
  const std::string what = absl::StrCat("lstm model ", path);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(what, ": no such file"));
  }
  const std::optional<std::string> read = ReadWholeFile(path);
  if (!read) return absl::NotFoundError(absl::StrCat(what, ": cannot open the file"));
  return Deserialize(*read, path);
}

absl::Status LstmForecaster::Deserialize(absl::string_view data, const std::string& path) {
  const std::string what = absl::StrCat("lstm model ", path);
  const absl::string_view magic(kMagic, sizeof(kMagic));
  if (data.size() < magic.size() && magic.substr(0, data.size()) == data) {
    return absl::DataLossError(absl::StrCat(what, ": truncated: ", data.size(),
                                            " bytes, the header alone is ", kHeaderBytes));
  }
  if (data.substr(0, magic.size()) != magic) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": bad magic: not a drover LSTM model file"));
  }
  if (data.size() < kHeaderBytes) {
    return absl::DataLossError(absl::StrCat(what, ": truncated: ", data.size(),
                                            " bytes, the header alone is ", kHeaderBytes));
  }
  uint32_t version = 0;
  uint64_t payload_bytes = 0;
  std::memcpy(&version, data.data() + magic.size(), sizeof(version));
  std::memcpy(&payload_bytes, data.data() + magic.size() + sizeof(version), sizeof(payload_bytes));
  if (version != kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": format version ", version, ", this build reads version ", kFormatVersion));
  }
  const uint64_t body = data.size() - kHeaderBytes;
  if (payload_bytes > body || body - payload_bytes < kChecksumBytes) {
    return absl::DataLossError(absl::StrCat(
        what, ": truncated: ", data.size(), " bytes, the header announces a payload of ",
        payload_bytes, " bytes plus ", kHeaderBytes + kChecksumBytes, " of framing"));
  }
  if (body - payload_bytes > kChecksumBytes) {
    return absl::DataLossError(absl::StrCat(
        what, ": corrupt: ", body - payload_bytes - kChecksumBytes, " bytes after the checksum"));
  }
  const size_t checked = kHeaderBytes + payload_bytes;
  uint64_t stored = 0;
  std::memcpy(&stored, data.data() + checked, sizeof(stored));
  const uint64_t computed = Fnv1a64(data.substr(0, checked));
  if (stored != computed) {
    return absl::DataLossError(
        absl::StrFormat("%s: checksum mismatch (stored %016x, computed %016x): the file is corrupt",
                        what, stored, computed));
  }

  Reader r(data.substr(kHeaderBytes, payload_bytes), path);
  LstmOptions o;
  Info info;
  Normalisation n;
  int32_t i32 = 0;
  auto get_int = [&](int& field, absl::string_view name) {
    absl::Status st = r.Get(i32, name);
    field = i32;
    return st;
  };
  DROVER_LSTM_RETURN_IF_ERROR(get_int(o.lookback, "options.lookback"));
  DROVER_LSTM_RETURN_IF_ERROR(get_int(o.step_minutes, "options.step_minutes"));
  DROVER_LSTM_RETURN_IF_ERROR(get_int(o.hidden, "options.hidden"));
  DROVER_LSTM_RETURN_IF_ERROR(get_int(o.epochs, "options.epochs"));
  DROVER_LSTM_RETURN_IF_ERROR(get_int(o.patience, "options.patience"));
  DROVER_LSTM_RETURN_IF_ERROR(get_int(o.batch, "options.batch"));
  DROVER_LSTM_RETURN_IF_ERROR(get_int(o.stride, "options.stride"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(o.learning_rate, "options.learning_rate"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(o.max_train_seconds, "options.max_train_seconds"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(o.seed, "options.seed"));
  DROVER_LSTM_RETURN_IF_ERROR(get_int(o.threads, "options.threads"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(o.max_train_minutes, "options.max_train_minutes"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(o.refit_minutes, "options.refit_minutes"));
  DROVER_LSTM_RETURN_IF_ERROR(get_int(o.refit_epochs, "options.refit_epochs"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(o.refit_learning_rate, "options.refit_learning_rate"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(o.refit_max_seconds, "options.refit_max_seconds"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(info.first_minute, "info.first_minute"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(info.last_minute, "info.last_minute"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(info.minutes, "info.minutes"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(info.loss, "info.loss"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(info.train_seconds, "info.train_seconds"));
  DROVER_LSTM_RETURN_IF_ERROR(get_int(info.epochs, "info.epochs"));
  DROVER_LSTM_RETURN_IF_ERROR(get_int(info.refits, "info.refits"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(n.mu, "normalisation.mu"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(n.sigma, "normalisation.sigma"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(n.scale, "normalisation.scale"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(n.q_mu, "normalisation.q_mu"));
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(n.q_sigma, "normalisation.q_sigma"));
  uint8_t has_queue = 0;
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(has_queue, "normalisation.has_queue"));
  n.has_queue = has_queue != 0;
  if (absl::Status st = ValidateLstmOptions(o); !st.ok()) {
    return absl::DataLossError(absl::StrCat(what, ": corrupt options: ", st.message()));
  }
  if (!std::isfinite(n.mu) || !std::isfinite(n.q_mu) || !(n.sigma > 0) || !(n.scale > 0) ||
      !(n.q_sigma > 0) || !std::isfinite(n.sigma) || !std::isfinite(n.scale) ||
      !std::isfinite(n.q_sigma)) {
    return absl::DataLossError(absl::StrCat(what, ": corrupt normalisation"));
  }

  Net net = MakeNet(o);
  auto params = net->named_parameters();
  uint32_t count = 0;
  DROVER_LSTM_RETURN_IF_ERROR(r.Get(count, "weights.count"));
  if (count != params.size()) {
    return absl::DataLossError(absl::StrCat(what, ": corrupt weights: ", count,
                                            " tensors, the network has ", params.size()));
  }
  torch::NoGradGuard no_grad;
  for (uint32_t i = 0; i < count; ++i) {
    uint16_t name_bytes = 0;
    absl::string_view name;
    DROVER_LSTM_RETURN_IF_ERROR(r.Get(name_bytes, "a weight's name"));
    DROVER_LSTM_RETURN_IF_ERROR(r.Take(name_bytes, "a weight's name", name));
    torch::Tensor* target = params.find(std::string(name));
    if (target == nullptr) {
      return absl::DataLossError(absl::StrCat(what, ": corrupt weights: unknown tensor ", name));
    }
    uint8_t dims = 0;
    DROVER_LSTM_RETURN_IF_ERROR(r.Get(dims, absl::StrCat(name, ".shape")));
    std::vector<int64_t> shape(dims);
    for (int64_t& d : shape) DROVER_LSTM_RETURN_IF_ERROR(r.Get(d, absl::StrCat(name, ".shape")));
    if (!torch::IntArrayRef(shape).equals(target->sizes())) {
      return absl::DataLossError(absl::StrCat(what, ": corrupt weights: ", name, " has shape ",
                                              c10::str(torch::IntArrayRef(shape)),
                                              ", the network's is ", c10::str(target->sizes())));
    }
    absl::string_view values;
    DROVER_LSTM_RETURN_IF_ERROR(r.Take(static_cast<size_t>(target->numel()) * sizeof(float),
                                       absl::StrCat(name, " values"), values));
    std::vector<float> copy(static_cast<size_t>(target->numel()));
    std::memcpy(copy.data(), values.data(), values.size());
    for (float x : copy) {
      if (!std::isfinite(x)) {
        return absl::DataLossError(
            absl::StrCat(what, ": corrupt weights: ", name, " has a value that is not finite"));
      }
    }
    target->copy_(torch::from_blob(copy.data(), target->sizes(), torch::kFloat));
  }
  if (r.remaining() != 0) {
    return absl::DataLossError(
        absl::StrCat(what, ": corrupt payload: ", r.remaining(), " bytes after the weights"));
  }
  net->eval();
  impl_->options = o;
  impl_->norm = n;
  impl_->net = net;
  impl_->fitted = true;
  impl_->info = info;
  return absl::OkStatus();
}

}  // namespace drover::scale
