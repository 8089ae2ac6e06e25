// sim: what a run leaves for people to read — the per-minute CSV and the SVG chart (two
// panels on one time axis, labelled scales, the forecast band, the judged window).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "fmt/core.h"
#include "sim/simulator.h"
#include "util/svg_chart.h"

namespace drover::sim {

std::string MinuteCsv(const SimReport& r) {
  std::string out =
      "minute,arrivals,agents,queue_depth,dispatched,p95_wait_s,violated,forecast_p10,"
      "forecast_p50,forecast_p90\n";
  for (const MinuteRow& row : r.rows) {
    out += fmt::format("{},{},{:.3f},{},{},{:.3f},{}", row.minute, row.arrivals, row.agents,
                       row.queue_depth, row.dispatched, row.p95_wait_s, row.violated ? 1 : 0);
    out += row.forecast_p90 < 0 ? std::string(",,,\n")
                                : fmt::format(",{:.2f},{:.2f},{:.2f}\n", row.forecast_p10,
                                              row.forecast_p50, row.forecast_p90);
  }
  return out;
}

std::string ChartSvg(const SimReport& r, const Trace& trace) {
  (void)trace;
  // Two panels sharing the time axis: arrivals per minute (with the forecast band of a
  // forecasting policy) above, agents and queue depth below, each on its own labelled
  // scale; the legend sits above the panels, out of the data's way.
  constexpr int kW = 1100, kPanel = 220, kLeft = 70, kRight = 70, kTop = 60, kGap = 50;
  constexpr int kBottom = 50;
  const int height = kTop + 2 * kPanel + kGap + kBottom;
  const size_t n = r.rows.size();
  const size_t per = std::max<size_t>(1, (n + kW - 1) / kW);  // minutes per point
  struct Point {
    double arrivals = 0, agents = 0, queue = 0, lo = -1, hi = -1;
  };
  std::vector<Point> pts;
  for (size_t i = 0; i < n; i += per) {
    Point p;
    for (size_t j = i; j < std::min(n, i + per); ++j) {
      const MinuteRow& row = r.rows[j];
      p.arrivals = std::max(p.arrivals, static_cast<double>(row.arrivals));
      p.agents = std::max(p.agents, row.agents);
      p.queue = std::max(p.queue, static_cast<double>(row.queue_depth));
      if (row.forecast_p90 >= 0) {
        p.lo = p.lo < 0 ? row.forecast_p10 : std::min(p.lo, row.forecast_p10);
        p.hi = std::max(p.hi, row.forecast_p90);
      }
    }
    pts.push_back(p);
  }
  auto nice = [](double top, double* step) { return NiceTop(std::max(top, 1.0), step); };
  double top_a = 0, top_g = 0, top_q = 0;
  for (const Point& p : pts) {
    top_a = std::max({top_a, p.arrivals, p.hi});
    top_g = std::max(top_g, p.agents);
    top_q = std::max(top_q, p.queue);
  }
  double step_a = 1, step_g = 1, step_q = 1;
  top_a = nice(top_a, &step_a);
  top_g = nice(top_g, &step_g);
  top_q = nice(top_q, &step_q);
  const double minutes = static_cast<double>(std::max<size_t>(1, n));
  auto x = [&](size_t i) {
    return kLeft + (pts.size() > 1 ? static_cast<double>(i) * kW / (pts.size() - 1) : 0);
  };
  const int y1 = kTop, y2 = kTop + kPanel + kGap;  // panel tops
  auto y = [&](int panel_top, double v, double top) {
    return panel_top + kPanel - v / top * kPanel;
  };
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n<text x=\"{}\" y=\"18\" font-size=\"14\">{}: {:.1f} agent-hours, "
      "wait p95 {:.1f} s, {} of {} judged minutes over the objective, {} actions ({} flaps)"
      "</text>\n",
      kLeft + kW + kRight, height, kLeft, r.policy, r.agent_hours, r.wait_p95_s, r.minutes_violated,
      r.minutes, r.scale_actions, r.flaps);
  // Legend, one row above the panels.
  struct Key {
    const char* label;
    const char* color;
    bool band;
  };
  std::vector<Key> keys = {{"arrivals / minute (left, top)", "#4477aa", false},
                           {"agents (left, bottom)", "#cc6677", false},
                           {"queue depth (right, bottom)", "#228833", false}};
  const bool band = std::any_of(pts.begin(), pts.end(), [](const Point& p) { return p.hi >= 0; });
  if (band) keys.push_back({"forecast p10-p90, made 15 min before", "#4477aa", true});
  int kx = kLeft;
  for (const Key& k : keys) {
    svg += k.band ? fmt::format(
                        "<rect x=\"{}\" y=\"32\" width=\"18\" height=\"10\" fill=\"{}\" "
                        "fill-opacity=\"0.25\"/>\n",
                        kx, k.color)
                  : fmt::format(
                        "<line x1=\"{0}\" y1=\"37\" x2=\"{1}\" y2=\"37\" stroke=\"{2}\" "
                        "stroke-width=\"2\"/>\n",
                        kx, kx + 18, k.color);
    svg += fmt::format("<text x=\"{}\" y=\"41\">{}</text>\n", kx + 24, k.label);
    kx += 24 + 7 * static_cast<int>(std::string(k.label).size()) + 24;
  }
  // Axes: time (days past 3 days of minutes, else hours), left and right value scales.
  const bool days = minutes > 3 * 1440;
  const double unit = days ? 1440 : 60;
  double tstep = 1;
  const double tmax = nice(minutes / unit, &tstep);
  (void)tmax;
  for (int panel_top : {y1, y2}) {
    svg += fmt::format(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n",
        kLeft, panel_top, kW, kPanel);
    for (double t = 0; t <= minutes / unit + 1e-9; t += tstep) {
      const double tx = kLeft + t * unit / minutes * kW;
      svg += fmt::format(
          "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" "
          "stroke=\"#eee\"/>\n",
          tx, panel_top, panel_top + kPanel);
      if (panel_top == y2) {
        svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:g}</text>\n", tx,
                           y2 + kPanel + 16, t);
      }
    }
  }
  svg += fmt::format(
      "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">time ({} from the trace's "
      "start)</text>\n",
      kLeft + kW / 2, height - 10, days ? "days" : "hours");
  auto scale = [&](int panel_top, double top, double step, bool right, const char* label,
                   const char* color) {
    for (double v = 0; v <= top + 1e-9; v += step) {
      const double vy = y(panel_top, v, top);
      svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"{}\" fill=\"{}\">{:g}</text>\n",
                         right ? kLeft + kW + 6 : kLeft - 6, vy + 4, right ? "start" : "end", color,
                         v);
    }
    const int lx = right ? kLeft + kW + 55 : 16;
    svg += fmt::format(
        "<text transform=\"translate({},{}) rotate(-90)\" text-anchor=\"middle\" "
        "fill=\"{}\">{}</text>\n",
        lx, panel_top + kPanel / 2, color, label);
  };
  scale(y1, top_a, step_a, false, "arrivals per minute", "#4477aa");
  scale(y2, top_g, step_g, false, "agents", "#cc6677");
  scale(y2, top_q, step_q, true, "ready tasks", "#228833");
  if (band) {
    std::string upper, lower;
    for (size_t i = 0; i < pts.size(); ++i) {
      if (pts[i].hi < 0) continue;
      upper += fmt::format("{:.1f},{:.1f} ", x(i), y(y1, pts[i].hi, top_a));
    }
    for (size_t i = pts.size(); i-- > 0;) {
      if (pts[i].hi < 0) continue;
      lower += fmt::format("{:.1f},{:.1f} ", x(i), y(y1, std::max(0.0, pts[i].lo), top_a));
    }
    svg += fmt::format(
        "<polygon fill=\"#4477aa\" fill-opacity=\"0.25\" stroke=\"none\" "
        "points=\"{}{}\"/>\n",
        upper, lower);
  }
  auto line = [&](int panel_top, double top, const char* color, double Point::*field) {
    std::string points;
    for (size_t i = 0; i < pts.size(); ++i) {
      points += fmt::format("{:.1f},{:.1f} ", x(i), y(panel_top, pts[i].*field, top));
    }
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1\" points=\"{}\"/>\n",
                       color, points);
  };
  line(y1, top_a, "#4477aa", &Point::arrivals);
  line(y2, top_g, "#cc6677", &Point::agents);
  line(y2, top_q, "#228833", &Point::queue);
  if (r.judged_from_minute > 0 && n > 0) {
    const double jx = kLeft + static_cast<double>(r.judged_from_minute) / minutes * kW;
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#555\" "
        "stroke-dasharray=\"4 3\"/>\n<text x=\"{3:.1f}\" y=\"{4}\" fill=\"#555\">"
        "judged from here</text>\n",
        jx, y1, y2 + kPanel, jx + 4, y1 + 14);
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace drover::sim
