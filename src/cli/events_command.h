// `drover events`: the event log (docs/events.md) — what happened to tasks, agents,
// workflows and pools — listed, filtered, and followed live with --follow (a long poll
// that goes on across server restarts).
#pragma once

#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"
#include "client/client.h"

namespace drover::cli {

class EventsCommand {
 public:
  void Add(CLI::App& app);
  bool parsed() const { return cmd_ != nullptr && cmd_->parsed(); }
  int Run(client::Client& c);

 private:
  CLI::App* cmd_ = nullptr;
  std::string type_, pool_, tenant_, since_;
  uint64_t task_ = 0, workflow_ = 0;
  int limit_ = 1000;
  bool follow_ = false;
  bool jsonl_ = false;
};

}  // namespace drover::cli
