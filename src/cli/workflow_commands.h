// `drover workflow submit|get|ls|wait|cancel` and `drover mapreduce`: DAG workflows and
// map-reduce jobs from the command line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "client/client.h"

namespace drover::cli {

namespace v1 = ::drover::v1;

class WorkflowCommands {
 public:
  // Adds `workflow` and its subcommands to `app`.
  void Add(CLI::App& app);
  bool parsed() const {
    return (root_ != nullptr && root_->parsed()) || (mapreduce_ != nullptr && mapreduce_->parsed());
  }
  // Runs the parsed subcommand; returns the exit code.
  int Run(client::Client& c);

 private:
  int Submit(client::Client& c);
  int Get(client::Client& c);
  int List(client::Client& c);
  int Wait(client::Client& c, uint64_t id, const std::string& timeout);
  int Cancel(client::Client& c);
  int MapReduce(client::Client& c);
  // Polls the workflow until it ends, with a progress bar; returns it (or an error).
  absl::StatusOr<v1::Workflow> Follow(client::Client& c, uint64_t id, const std::string& timeout,
                                      bool* timed_out);

  CLI::App* root_ = nullptr;
  CLI::App* submit_ = nullptr;
  CLI::App* get_ = nullptr;
  CLI::App* ls_ = nullptr;
  CLI::App* wait_ = nullptr;
  CLI::App* cancel_ = nullptr;
  CLI::App* mapreduce_ = nullptr;
  struct {
    std::string mapper, reducer, items_file, on_error = "fail_fast", reduce_payload, priority;
    std::vector<std::string> items;
    int parallelism = 0, max_attempts = 0;
    bool detach = false;
  } mr_;
  std::string file_, tenant_, name_, state_, page_token_, reason_, timeout_ = "1h";
  uint64_t id_ = 0;
  int limit_ = 50;
  bool wait_flag_ = false, json_ = false, quiet_ = false;
};

}  // namespace drover::cli
