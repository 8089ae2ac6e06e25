// loadtest: the `drover serve` it starts when no server is given.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "loadtest/internal.h"

namespace drover::loadtest {

OwnServer::OwnServer(const Options& o) : o_(o) {}

OwnServer::~OwnServer() {
  Stop();
  if (own_dir_) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

absl::Status OwnServer::Start() {
  if (dir_.empty()) {
    char tmpl[] = "/tmp/drover-loadtest.XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      return absl::InternalError(absl::StrCat("a temporary directory: ", strerror(errno)));
    }
    dir_ = tmpl;
    own_dir_ = o_.data_dir.empty();
    data_dir_ = o_.data_dir.empty() ? dir_ + "/data" : o_.data_dir;
  }
  const std::string port_file = dir_ + "/ports";
  std::filesystem::remove(port_file);
  // The same ports after a restart, so clients and agents find it where it was.
  std::vector<std::string> argv = {o_.binary,       "serve",
                                   "--data-dir",    data_dir_,
                                   "--grpc-listen", absl::StrCat("127.0.0.1:", grpc_port_),
                                   "--http-listen", absl::StrCat("127.0.0.1:", http_port_),
                                   "--lease-ttl",   "5s",
                                   "--port-file",   port_file};
  absl::StatusOr<pid_t> pid = Spawn(argv, dir_ + "/serve.log");
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  for (int i = 0; i < 600; ++i) {
    std::ifstream in(port_file);
    int g = 0, h = 0;
    if (in >> g >> h) {
      grpc_port_ = g;
      http_port_ = h;
      return absl::OkStatus();
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::UnavailableError(absl::StrCat("the server loadtest started (", o_.binary,
                                                 " serve) exited at start-up; see ", dir_,
                                                 "/serve.log"));
    }
    usleep(50'000);
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "the server loadtest started did not listen within 30 s; see ", dir_, "/serve.log"));
}

void OwnServer::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

void OwnServer::Stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

}  // namespace drover::loadtest
