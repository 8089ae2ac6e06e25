#include "util/svg_chart.h"

#include <algorithm>
#include <cmath>

#include "fmt/core.h"

namespace drover {

double NiceTop(double top, double* step) {
  if (!(top > 0) || !std::isfinite(top)) top = 1;
  const double raw = top / 5;
  const double mag = std::pow(10, std::floor(std::log10(raw)));
  const double f = raw / mag;
  *step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  return std::ceil(top / *step - 1e-9) * *step;
}

namespace {

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string Tick(double v) {
  if (v != 0 && (std::fabs(v) >= 1e6 || std::fabs(v) < 1e-3)) return fmt::format("{:.0e}", v);
  if (std::fabs(v) >= 10000) return fmt::format("{:.0f}k", v / 1000);
  return fmt::format("{:g}", v);
}

}  // namespace

std::string LineChartSvg(const Chart& c) {
  constexpr int kW = 900, kH = 300, kLeft = 80, kRight = 80, kTop = 60, kBottom = 50;
  const int width = kLeft + kW + kRight, height = kTop + kH + kBottom;
  double xmin = c.x.empty() ? 0 : c.x.front(), xmax = c.x.empty() ? 1 : c.x.back();
  if (xmax <= xmin) xmax = xmin + 1;
  double top_l = 0, top_r = 0;
  bool any_right = false;
  for (const ChartSeries& s : c.series) {
    any_right |= s.right;
    for (double v : s.y) {
      if (std::isfinite(v)) (s.right ? top_r : top_l) = std::max(s.right ? top_r : top_l, v);
    }
  }
  double step_l = 1, step_r = 1;
  top_l = NiceTop(top_l, &step_l);
  top_r = NiceTop(top_r, &step_r);
  auto px = [&](double x) { return kLeft + (x - xmin) / (xmax - xmin) * kW; };
  auto py = [&](double v, bool right) { return kTop + kH - v / (right ? top_r : top_l) * kH; };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n<text x=\"{}\" y=\"18\" font-size=\"14\">{}</text>\n",
      width, height, kLeft, Escape(c.title));
  int kx = kLeft;
  for (const ChartSeries& s : c.series) {
    const std::string label = s.name + (any_right ? (s.right ? " (right)" : " (left)") : "");
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"37\" x2=\"{1}\" y2=\"37\" stroke=\"{2}\" stroke-width=\"2\"/>\n"
        "<text x=\"{3}\" y=\"41\">{4}</text>\n",
        kx, kx + 18, Escape(s.color), kx + 24, Escape(label));
    kx += 24 + 7 * static_cast<int>(label.size()) + 20;
  }
  svg += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n", kLeft,
      kTop, kW, kH);
  double xstep = 1;
  const double xtop = NiceTop(xmax - xmin, &xstep);
  (void)xtop;
  for (double t = 0; xmin + t <= xmax + 1e-9; t += xstep) {
    const double tx = px(xmin + t);
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#eee\"/>\n"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
        tx, kTop, kTop + kH, kTop + kH + 16, Tick(xmin + t));
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", kLeft + kW / 2,
                     height - 10, Escape(c.x_label));
  auto scale = [&](bool right, double top, double step, const std::string& label) {
    for (double v = 0; v <= top + 1e-9; v += step) {
      const double vy = py(v, right);
      if (!right) {
        svg +=
            fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#eee\"/>\n",
                        kLeft, vy, kLeft + kW, vy);
      }
      svg +=
          fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"{}\">{}</text>\n",
                      right ? kLeft + kW + 6 : kLeft - 6, vy + 4, right ? "start" : "end", Tick(v));
    }
    svg += fmt::format(
        "<text transform=\"translate({},{}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
        right ? kLeft + kW + 62 : 18, kTop + kH / 2, Escape(label));
  };
  scale(false, top_l, step_l, c.y_label);
  if (any_right) scale(true, top_r, step_r, c.y2_label);
  for (const ChartSeries& s : c.series) {
    std::string points;
    auto flush = [&] {
      if (!points.empty()) {
        svg += fmt::format(
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            Escape(s.color), points);
      }
      points.clear();
    };
    for (size_t i = 0; i < s.y.size() && i < c.x.size(); ++i) {
      if (!std::isfinite(s.y[i])) {
        flush();
        continue;
      }
      points += fmt::format("{:.1f},{:.1f} ", px(c.x[i]), py(s.y[i], s.right));
    }
    flush();
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace drover
