#include "obs/metrics.h"

#include <cmath>

#include "fmt/format.h"

namespace drover::obs {

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

namespace {
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}
}  // namespace

void PromWriter::Family(const std::string& name, const std::string& type, const std::string& help) {
  family_ = name;
  fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void PromWriter::Line(const std::string& name, const Labels& labels, double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i > 0) out_ += ',';
      fmt::format_to(std::back_inserter(out_), "{}=\"{}\"", labels[i].first,
                     EscapeLabelValue(labels[i].second));
    }
    out_ += '}';
  }
  out_ += ' ';
  out_ += FormatValue(value);
  out_ += '\n';
}

void PromWriter::Sample(const Labels& labels, double value) { Line(family_, labels, value); }

void PromWriter::HistogramSample(const Labels& labels, const Histogram& h) {
  uint64_t cumulative = 0;
  const auto& bounds = h.bounds();
  const auto& counts = h.counts();
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    Labels with_le = labels;
    with_le.emplace_back("le", i < bounds.size() ? FormatValue(bounds[i]) : "+Inf");
    Line(family_ + "_bucket", with_le, static_cast<double>(cumulative));
  }
  Line(family_ + "_sum", labels, h.sum());
  Line(family_ + "_count", labels, static_cast<double>(h.count()));
}

void PromWriter::Counter(const std::string& name, const std::string& help, double value) {
  Family(name, "counter", help);
  Sample({}, value);
}

void PromWriter::Gauge(const std::string& name, const std::string& help, double value) {
  Family(name, "gauge", help);
  Sample({}, value);
}

}  // namespace drover::obs
