// `drover forecast`: a pool's forecast (the table for 15, 30 and 60 minutes with intervals,
// confidence, the members' weights and recent errors), and `drover forecast backtest`, a
// rolling-origin backtest of the forecasters on a trace, with no server.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "client/client.h"

namespace drover::cli {

class ForecastCommand {
 public:
  void Add(CLI::App& app);
  bool parsed() const { return cmd_ != nullptr && cmd_->parsed(); }
  // The backtest needs no server.
  bool offline() const { return backtest_ != nullptr && backtest_->parsed(); }
  int RunOffline();
  int Run(client::Client& c);

 private:
  CLI::App* cmd_ = nullptr;
  CLI::App* backtest_ = nullptr;
  std::string pool_;
  // backtest
  std::string trace_, horizons_ = "15,30,60", train_ = "7d", refit_ = "1d",
                      service_ = "lognormal:20s", objective_ = "60s";
  std::vector<std::string> models_;
  int slots_ = 1;
  double scale_ = 1;
  uint64_t seed_ = 1;
};

}  // namespace drover::cli
