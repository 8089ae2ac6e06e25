// runner: `drover agent`, which turns any command into a drover agent.
//
// It registers with the server, opens a work stream and runs the command once per leased
// task: the payload on stdin; DROVER_TASK_ID, DROVER_ATTEMPT, DROVER_DEADLINE_UNIX_MS,
// DROVER_TASK_TYPE, DROVER_TENANT, DROVER_PRIORITY, DROVER_CHECKPOINT_FILE and
// DROVER_SERVER in the
// environment; stdout becomes the result. Exit 0 succeeds, exit 75 (EX_TEMPFAIL) is a
// retryable failure, any other exit or a signal is a non-retryable failure. While the
// command runs the runner heartbeats; a checkpoint file the command writes is sent to the
// server (and handed to the next attempt); a cancel from the server kills the command's
// process group. When the server restarts, the runner registers again.
//
// Threading: RunAgent blocks until Stop is requested (SIGINT/SIGTERM in the CLI).
#pragma once

#include <atomic>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace drover::runner {

struct AgentOptions {
  std::string server = "127.0.0.1:7070";
  std::vector<std::string> types;
  int concurrency = 1;
  double cost_factor = 1;
  int64_t max_uses = 0;  // take at most this many tasks, then none (pools retire the agent)
  std::string name;
  std::map<std::string, std::string> labels;
  std::vector<std::string> command;  // argv; command[0] is looked up in PATH
  std::string work_dir;              // checkpoint files; default a fresh temp dir
  size_t max_result_bytes = 4 << 20;
  bool verbose = false;
};

// Runs until `stop` becomes true. Returns a process exit code.
int RunAgent(const AgentOptions& options, const std::atomic<bool>& stop);

// What running one leased task needs, decided before anything is written or forked: the
// files (the checkpoint, and each parent's result, state and error under the parents
// directory) and the command's environment. Every path is inside `work_dir`: a parent's file
// is named by its step when that is a plain name ([A-Za-z0-9_.-], not "." or ".."), else by
// its task id. No environment entry holds a NUL or a newline.
struct TaskPlan {
  std::string checkpoint_file;
  std::string parents_dir;                                 // "" without parents
  std::vector<std::pair<std::string, std::string>> files;  // path, content
  std::vector<std::string> env;                            // KEY=value, the DROVER_* ones
};
}  // namespace drover::runner

namespace drover::v1 {
class TaskLease;
}

namespace drover::runner {
TaskPlan PlanTask(const drover::v1::TaskLease& lease, const std::string& work_dir,
                  const std::string& server, const std::string& messages_file);

}  // namespace drover::runner
