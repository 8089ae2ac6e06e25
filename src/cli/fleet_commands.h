// `drover usage` (named resources, actual cost, tenants' shares) and `drover agents` (the
// registered agents): what the fleet is doing and what it costs.
#pragma once

#include "CLI/CLI.hpp"
#include "client/client.h"

namespace drover::cli {

class FleetCommands {
 public:
  void Add(CLI::App& app);
  bool parsed() const {
    return (usage_ != nullptr && usage_->parsed()) || (agents_ != nullptr && agents_->parsed()) ||
           (pools_ != nullptr && pools_->parsed()) || (cluster_ != nullptr && cluster_->parsed());
  }
  int Run(client::Client& c);

 private:
  int Usage(client::Client& c);
  int Agents(client::Client& c);
  int Pools(client::Client& c);
  int Decisions(client::Client& c);
  int Apply(client::Client& c);
  int Delete(client::Client& c);
  int Stop(client::Client& c);
  int Cluster(client::Client& c);

  CLI::App* usage_ = nullptr;
  CLI::App* agents_ = nullptr;
  CLI::App* pools_ = nullptr;
  CLI::App* decisions_ = nullptr;
  CLI::App* apply_ = nullptr;
  CLI::App* delete_ = nullptr;
  CLI::App* stop_ = nullptr;
  CLI::App* cluster_ = nullptr;
  std::string file_;
  bool force_ = false;
  std::string pool_;
  int limit_ = 20;
  bool json_ = false;
};

}  // namespace drover::cli
