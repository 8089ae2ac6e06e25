// `drover loadtest`: the four load scenarios against a server (its own unless --server is
// given), with a report directory (src/loadtest, docs/loadtest.md).
#pragma once

#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "loadtest/loadtest.h"

namespace drover::cli {

class LoadtestCommand {
 public:
  void Add(CLI::App& app);
  bool parsed() const { return cmd_ != nullptr && cmd_->parsed(); }
  // `server`: the global --server when it (or $DROVER_SERVER) was given, else "".
  int Run(const std::string& server);

 private:
  CLI::App* cmd_ = nullptr;
  loadtest::Options o_;
  std::vector<std::string> scenarios_;
  std::string duration_ = "60s", drain_ = "120s", work_, agent_command_;
  bool no_kill_ = false, quiet_ = false;
};

}  // namespace drover::cli
