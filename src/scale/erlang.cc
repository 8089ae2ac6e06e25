#include "scale/erlang.h"

#include <algorithm>
#include <cmath>

namespace drover::scale {

double ErlangC(int64_t c, double a) {
  if (a <= 0) return 0;
  if (c <= 0 || a >= static_cast<double>(c)) return 1;
  // Erlang B by its recurrence B(k) = a B(k-1) / (k + a B(k-1)), B(0) = 1: stable for any
  // c, unlike the textbook sum of a^k / k!.
  double b = 1;
  for (int64_t k = 1; k <= c; ++k) b = a * b / (static_cast<double>(k) + a * b);
  const double cd = static_cast<double>(c);
  return cd * b / (cd - a * (1 - b));
}

double WaitProbability(int64_t c, double a, double service_s, double t_s) {
  if (a <= 0) return 0;
  if (a >= static_cast<double>(c)) return 1;
  return ErlangC(c, a) * std::exp(-(static_cast<double>(c) - a) * t_s / service_s);
}

int64_t SlotsFor(const SizingModel& m, double per_minute) {
  if (per_minute <= 0 || m.service_s <= 0) return 0;
  const double a = per_minute / 60.0 * m.service_s;
  const double tail = 1 - m.quantile;
  // The answer lies between a and a plus a few standard deviations of the load; start at
  // floor(a) + 1 and walk up (the B recurrence is redone per c, O(c) each, but c is at
  // most a few thousand and only tens of steps are taken).
  int64_t c = static_cast<int64_t>(std::floor(a)) + 1;
  // Erlang B for c, then step B(c+1) from B(c) while walking.
  double b = 1;
  for (int64_t k = 1; k <= c; ++k) b = a * b / (static_cast<double>(k) + a * b);
  for (int guard = 0; guard < 100'000; ++guard) {
    const double cd = static_cast<double>(c);
    const double erlang_c = cd * b / (cd - a * (1 - b));
    const double p = erlang_c * std::exp(-(cd - a) * m.objective_s / m.service_s);
    if (p <= tail) return c;
    ++c;
    b = a * b / (static_cast<double>(c) + a * b);
  }
  return c;
}

int64_t AgentsFor(const SizingModel& m, double per_minute) {
  const int64_t c = SlotsFor(m, per_minute);
  const int64_t slots = std::max(1, m.slots);
  return (c + slots - 1) / slots;
}

}  // namespace drover::scale
