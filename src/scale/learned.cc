// The learned forecasters' module (libdrover_learned.so): gbt and lstm, with XGBoost and
// libtorch behind them, loaded by members.cc only when a pool or a simulation asks for one
// of them — so the `drover` binary itself starts in milliseconds, not the 0.6 s it takes to
// map libtorch's hundreds of libraries.
#include <cstdint>
#include <cstring>

#include "scale/gbt.h"
#include "scale/lstm.h"

extern "C" drover::scale::Forecaster* drover_new_learned_forecaster(const char* name,
                                                                    uint64_t seed) {
  if (std::strcmp(name, "gbt") == 0) {
    drover::scale::GbtOptions o;
    o.seed = seed;
    return new drover::scale::GbtForecaster(o);
  }
  if (std::strcmp(name, "lstm") == 0) {
    drover::scale::LstmOptions o;
    o.seed = seed;
    return new drover::scale::LstmForecaster(o);
  }
  return nullptr;
}
