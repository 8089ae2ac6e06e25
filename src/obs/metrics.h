// obs: Prometheus text exposition (format 0.0.4).
//
// Parts keep their own counters in a probe struct (core::EngineProbe, ...) owned by the
// thread that updates them; at scrape time the owner renders them through a PromWriter.
// This keeps the hot paths free of atomics and locks.
//
// Threading: a PromWriter is thread-compatible (one scrape builds one writer).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "util/histogram.h"

namespace drover::obs {

using Labels = std::vector<std::pair<std::string, std::string>>;

class PromWriter {
 public:
  // Starts a metric family. `type` is "counter", "gauge" or "histogram". Families must
  // not repeat; samples that follow belong to it.
  void Family(const std::string& name, const std::string& type, const std::string& help);
  void Sample(const Labels& labels, double value);
  // A whole histogram sample set for the current family (buckets, sum, count).
  void HistogramSample(const Labels& labels, const Histogram& h);

  // One-line helpers for a family with a single unlabelled sample.
  void Counter(const std::string& name, const std::string& help, double value);
  void Gauge(const std::string& name, const std::string& help, double value);

  const std::string& text() const { return out_; }

 private:
  void Line(const std::string& name, const Labels& labels, double value);
  std::string family_;
  std::string out_;
};

// Escapes a label value per the exposition format (backslash, quote, newline).
std::string EscapeLabelValue(const std::string& v);

}  // namespace drover::obs
