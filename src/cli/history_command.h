// `drover history`: a pool's per-minute load history (docs/history.md) as a table, and its
// arrivals imported from or exported to a trace CSV in the simulator's form, so a history
// can be replayed with `drover simulate --trace` and a trace can seed a pool's forecasts.
#pragma once

#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"
#include "client/client.h"

namespace drover::cli {

class HistoryCommand {
 public:
  void Add(CLI::App& app);
  bool parsed() const { return cmd_ != nullptr && cmd_->parsed(); }
  int Run(client::Client& c);

 private:
  int Show(client::Client& c);
  int Import(client::Client& c);
  int Export(client::Client& c);

  CLI::App* cmd_ = nullptr;
  CLI::App* import_ = nullptr;
  CLI::App* export_ = nullptr;
  CLI::Option* start_option_ = nullptr;
  std::string pool_, since_, until_, trace_, out_;
  int64_t start_ = 0;
  int limit_ = 0;
  bool json_ = false;
};

}  // namespace drover::cli
