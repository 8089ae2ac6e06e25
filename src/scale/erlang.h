// scale: the queueing model that turns an arrival rate into a number of agents.
//
// M/M/c (Erlang C): tasks arrive as a Poisson stream at rate lambda, each takes an
// exponentially distributed time with mean S, and c slots serve them from one queue. The
// offered load is a = lambda * S (in Erlangs). With a < c,
//
//   C(c, a)     = the probability that a task waits at all (Erlang's C formula)
//   P(W > t)    = C(c, a) * exp(-(c - a) * t / S)
//
// A pool with k agents of `slots` slots each is taken as c = k * slots servers (its agents
// share one queue, as drover's dispatcher does). Service times of real agents are not
// exponential (log-normal in the standard judging settings); the model is then a little
// pessimistic for small coefficients of variation, which errs on the side of the wait
// objective.
#pragma once

#include <cstdint>

namespace drover::scale {

// Erlang's C formula: the probability that an arrival waits, for c servers and offered
// load a (>= 0). 1 when a >= c (the queue grows without bound).
double ErlangC(int64_t c, double a);

// P(wait > t) for c servers, load a and mean service time s (> 0), t >= 0.
double WaitProbability(int64_t c, double a, double service_s, double t_s);

struct SizingModel {
  double service_s = 1;     // mean service time of one task
  int slots = 1;            // tasks one agent runs at once
  double objective_s = 60;  // the wait objective...
  double quantile = 0.95;   // ...met by this share of tasks
};

// The fewest slots c (>= 0) with a < c and P(wait > objective) <= 1 - quantile for an
// arrival rate of `per_minute` tasks per minute; 0 for a rate of 0.
int64_t SlotsFor(const SizingModel& m, double per_minute);
// The same in agents: ceil(SlotsFor / slots).
int64_t AgentsFor(const SizingModel& m, double per_minute);

}  // namespace drover::scale
