// `drover token create|ls|revoke`, `drover whoami`, `drover audit` and `drover auth
// matrix`: who may call drover, and what they did (docs/security.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "client/client.h"

namespace drover::cli {

class AuthCommands {
 public:
  void Add(CLI::App& app);
  // A command that needs no server (auth matrix).
  bool offline() const {
    return (matrix_ != nullptr && matrix_->parsed()) || (dev_ != nullptr && dev_->parsed());
  }
  int RunOffline();
  bool parsed() const {
    return (token_ != nullptr && token_->parsed()) || (whoami_ != nullptr && whoami_->parsed()) ||
           (audit_ != nullptr && audit_->parsed());
  }
  int Run(client::Client& c);

 private:
  int Create(client::Client& c);
  int List(client::Client& c);
  int Revoke(client::Client& c);
  int WhoAmI(client::Client& c);
  int Audit(client::Client& c);

  CLI::App* token_ = nullptr;
  CLI::App* create_ = nullptr;
  CLI::App* ls_ = nullptr;
  CLI::App* revoke_ = nullptr;
  CLI::App* whoami_ = nullptr;
  CLI::App* audit_ = nullptr;
  CLI::App* auth_ = nullptr;
  CLI::App* matrix_ = nullptr;
  CLI::App* certs_ = nullptr;
  CLI::App* dev_ = nullptr;
  std::vector<std::string> hosts_;
  std::string client_name_ = "dev-client";
  int days_ = 30;
  std::string name_, ttl_, id_, principal_, tenant_, since_, out_;
  std::vector<std::string> roles_;
  int limit_ = 100;
  bool json_ = false;
  bool jsonl_ = false;
};

}  // namespace drover::cli
