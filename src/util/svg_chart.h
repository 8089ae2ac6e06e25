// util/svg_chart: a line chart as a standalone SVG file, for reports people read (the
// load test's). One time axis, a left value scale and an optional right one, each labelled
// with its unit, a legend above the plot, gaps where a value is missing (NaN).
#pragma once

#include <string>
#include <vector>

namespace drover {

struct ChartSeries {
  std::string name;       // in the legend
  std::string color;      // any SVG colour, "#4477aa"
  std::vector<double> y;  // one value per x; NaN leaves a gap
  bool right = false;     // drawn on the right-hand scale
};

struct Chart {
  std::string title;
  std::string x_label, y_label, y2_label;  // with units: "time (s)", "tasks per second"
  std::vector<double> x;                   // ascending
  std::vector<ChartSeries> series;
};

std::string LineChartSvg(const Chart& chart);

// A round upper bound >= `top` for a scale that starts at 0, and its tick step (1, 2 or 5
// times a power of ten), about five ticks.
double NiceTop(double top, double* step);

}  // namespace drover
