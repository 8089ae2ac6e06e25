// `drover simulate`: replays a trace through the engine and autoscaler on a virtual clock,
// one run per policy on the same trace and seed, and prints their figures side by side.
#pragma once

#include <string>
#include <vector>

#include "CLI/CLI.hpp"

namespace drover::cli {

class SimulateCommand {
 public:
  void Add(CLI::App& app);
  bool parsed() const { return cmd_ != nullptr && cmd_->parsed(); }
  int Run();

 private:
  CLI::App* cmd_ = nullptr;
  std::string trace_, service_ = "exp:1s", startup_ = "30s", objective_ = "60s", out_;
  std::vector<std::string> policies_, classes_;
  double failure_rate_ = 0, price_ = 1;
  int slots_ = 1, max_agents_ = 1000;
  int64_t capacity_ = 1'000'000;
  uint64_t seed_ = 1;
  bool even_ = false;
  double scale_ = 1;
  std::string history_, judge_after_ = "0s", fallback_ = "hpa-util";
  std::vector<std::string> models_;
};

}  // namespace drover::cli
