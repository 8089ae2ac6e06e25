#include "cli/workflow_commands.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "cli/common.h"
#include "core/engine.h"
#include "fmt/core.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "util/json.h"

namespace drover::cli {
namespace {

namespace v1 = ::drover::v1;
namespace pb = ::google::protobuf;

constexpr int kMaxStepsShown = 200;

// A step's task payload in a workflow file: "payload" is text when it is a string and JSON
// when it is any other value (an object, a list, a number...), "payload_json" any JSON value
// (or, as a bool, the API's own flag: a string payload is then a JSON string),
// "payload_base64" or "payload_bytes" binary data. The wire form is protobuf's JSON
// mapping: base64 bytes, with payload_json set when they are JSON text (docs/payloads.md).
absl::Status ConvertPayload(pb::Struct& task, const std::string& field) {
  auto& f = *task.mutable_fields();
  int given = 0;
  std::string bytes;
  bool json = false;
  auto as_json = [](const pb::Value& v) {
    std::string text;
    (void)pb::util::MessageToJsonString(v, &text);
    return text;
  };
  bool flag = false;
  if (auto it = f.find("payload_json"); it != f.end() && it->second.has_bool_value()) {
    flag = it->second.bool_value();
    f.erase(it);
  }
  if (auto it = f.find("payload"); it != f.end()) {
    if (it->second.kind_case() == pb::Value::kStringValue && !flag) {
      bytes = it->second.string_value();
    } else {
      bytes = as_json(it->second);
      json = true;
    }
    ++given;
  }
  if (auto it = f.find("payload_json"); it != f.end()) {
    bytes = as_json(it->second);
    json = true;
    f.erase(it);
    ++given;
  }
  for (const char* name : {"payload_base64", "payload_bytes"}) {
    if (auto it = f.find(name); it != f.end()) {
      if (it->second.kind_case() != pb::Value::kStringValue ||
          !absl::Base64Unescape(it->second.string_value(), &bytes)) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".", name, ": not base64"));
      }
      f.erase(it);
      ++given;
    }
  }
  if (given > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": give one of payload, payload_json, payload_base64 and payload_bytes"));
  }
  if (given == 1) f["payload"].set_string_value(absl::Base64Escape(bytes));
  if (json) f["payload_json"].set_bool_value(true);
  return absl::OkStatus();
}

absl::StatusOr<v1::WorkflowSpec> ReadWorkflowFile(const std::string& path) {
  std::stringstream text;
  if (path == "-") {
    text << std::cin.rdbuf();
  } else {
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read the file"));
    text << in.rdbuf();
  }
  pb::Value root;
  if (auto st = pb::util::JsonStringToMessage(text.str(), &root); !st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not valid JSON (", std::string(st.message()), ")"));
  }
  if (root.kind_case() != pb::Value::kStructValue) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a JSON object with \"steps\""));
  }
  auto& fields = *root.mutable_struct_value()->mutable_fields();
  if (auto it = fields.find("steps"); it != fields.end() && it->second.has_list_value()) {
    auto* steps = it->second.mutable_list_value()->mutable_values();
    for (int i = 0; i < steps->size(); ++i) {
      pb::Value& step = (*steps)[i];
      if (!step.has_struct_value()) continue;  // the parse below names the problem
      auto& sf = *step.mutable_struct_value()->mutable_fields();
      auto task = sf.find("task");
      if (task == sf.end() || !task->second.has_struct_value()) continue;
      if (auto st = ConvertPayload(*task->second.mutable_struct_value(),
                                   absl::StrCat("steps[", i, "].task"));
          !st.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
      }
    }
  }
  std::string json;
  (void)pb::util::MessageToJsonString(root, &json);
  v1::WorkflowSpec spec;
  if (auto st = pb::util::JsonStringToMessage(json, &spec); !st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a workflow (", std::string(st.message()), ")"));
  }
  return spec;
}

std::string Progress(const v1::Workflow& w) {
  return absl::StrCat(w.done(), "/", w.total(), " done (", w.succeeded(), " succeeded, ",
                      w.failed(), " failed, ", w.canceled(), " canceled)");
}

void PrintWorkflow(const v1::Workflow& w, client::Client* c) {
  fmt::print("workflow {}  {}{}  {}\n", w.id(),
             absl::AsciiStrToUpper(core::WorkflowStateName(w.state())),
             w.name().empty() ? "" : absl::StrCat("  \"", w.name(), "\""), Progress(w));
  fmt::print("  tenant {}  created {} ago{}\n", w.tenant(), Age(w.created_unix_ms()),
             w.finished_unix_ms() > 0
                 ? absl::StrCat(", took ", (w.finished_unix_ms() - w.created_unix_ms()), " ms")
                 : "");
  if (!w.reason().empty()) fmt::print("  reason: {}\n", w.reason());
  if (w.state() == v1::WORKFLOW_STATE_RUNNING && w.critical_path_size() > 0) {
    std::vector<std::string> path;
    for (uint64_t id : w.critical_path()) {
      for (const v1::WorkflowTaskRef& ref : w.tasks()) {
        if (ref.task_id() == id) path.push_back(ref.step());
      }
    }
    std::vector<std::string> runnable;
    for (uint64_t id : w.runnable()) runnable.push_back(absl::StrCat(id));
    fmt::print("  critical path {:.1f} s: {}\n  can run now: {}\n", w.critical_path_ms() / 1000.0,
               absl::StrJoin(path, " -> "), runnable.empty() ? "-" : absl::StrJoin(runnable, " "));
  }
  if (c == nullptr) return;
  fmt::print("  {:<20}  {:>8}  {:<10}  {}\n", "STEP", "TASK", "STATE", "NOTE");
  int shown = 0;
  for (const v1::WorkflowTaskRef& ref : w.tasks()) {
    if (++shown > kMaxStepsShown) {
      fmt::print("  ... {} more steps (drover ls shows tasks)\n", w.tasks_size() - kMaxStepsShown);
      break;
    }
    auto t = c->Get(ref.task_id());
    if (!t.ok()) {
      fmt::print("  {:<20}  {:>8}  {:<10}  {}\n", ref.step(), ref.task_id(), "?",
                 std::string(t.status().message()));
      continue;
    }
    std::string note = t->state() == v1::TASK_STATE_SUCCEEDED ? Printable(t->result(), 50)
                       : t->reason().empty()                  ? t->last_error()
                                                              : t->reason();
    fmt::print("  {:<20}  {:>8}  {:<10}  {}\n", ref.step(), ref.task_id(),
               core::StateName(t->state()), Printable(note, 70));
  }
}

}  // namespace

void WorkflowCommands::Add(CLI::App& app) {
  root_ = app.add_subcommand("workflow", "DAG workflows: submit, get, ls, wait, cancel");
  root_->require_subcommand(1);
  submit_ = root_->add_subcommand(
      "submit", "Submit a workflow from a JSON file (docs/workflows.md shows the format)");
  submit_->add_option("file", file_, "the workflow file ('-' reads stdin)")->required();
  submit_->add_option("--tenant", tenant_, "tenant (overrides the file's)");
  submit_->add_option("--name", name_, "name (overrides the file's)");
  submit_->add_flag("--wait,-w", wait_flag_, "show progress until it ends; exit 0 if it succeeded");
  submit_->add_option("--timeout", timeout_, "with --wait: give up after this long (default 1h)");
  submit_->add_flag("--quiet,-q", quiet_, "print only the workflow id");
  submit_->add_flag("--json", json_, "print JSON");

  get_ = root_->add_subcommand("get", "Show a workflow and the state of each step");
  get_->add_option("id", id_, "workflow id")->required();
  get_->add_flag("--json", json_, "print JSON");

  ls_ = root_->add_subcommand("ls", "List workflows");
  ls_->add_option("--state", state_, "running, succeeded, failed or canceled");
  ls_->add_option("--tenant", tenant_, "tenant");
  ls_->add_option("--limit", limit_, "page size (at most 1000)");
  ls_->add_option("--page-token", page_token_, "continue a listing");
  ls_->add_flag("--json", json_, "print JSON");

  wait_ = root_->add_subcommand("wait", "Wait until a workflow ends; exit 0 if it succeeded");
  wait_->add_option("id", id_, "workflow id")->required();
  wait_->add_option("--timeout", timeout_, "give up after this long (default 1h), exit 2");
  wait_->add_flag("--json", json_, "print JSON");

  mapreduce_ = app.add_subcommand(
      "mapreduce",
      "Run a map-reduce job: one map task per item, then a reduce task over their results; "
      "shows progress and prints the reducer's result");
  mapreduce_->add_option("--mapper", mr_.mapper, "agent type of the map tasks")->required();
  mapreduce_->add_option("--reducer", mr_.reducer, "agent type of the reduce task")->required();
  mapreduce_->add_option("--items", mr_.items_file,
                         "JSON-lines file: each non-empty line is one item ('-' reads stdin)");
  mapreduce_->add_option("--item", mr_.items, "one item (repeatable)");
  mapreduce_->add_option("--parallelism", mr_.parallelism, "map tasks at once (default no limit)");
  mapreduce_->add_option("--on-error", mr_.on_error,
                         "fail_fast (default) or continue_on_partial (the reducer is told which "
                         "items failed)");
  mapreduce_->add_option("--reduce-payload", mr_.reduce_payload, "payload of the reduce task");
  mapreduce_->add_option("--priority", mr_.priority, "critical, high, normal, low or background");
  mapreduce_->add_option("--max-attempts", mr_.max_attempts, "per map task (default: type's)");
  mapreduce_->add_option("--name", name_, "job name");
  mapreduce_->add_option("--tenant", tenant_, "tenant");
  mapreduce_->add_option("--timeout", timeout_, "stop waiting after this long (default 1h)");
  mapreduce_->add_flag("--detach", mr_.detach, "print the workflow id and return at once");
  mapreduce_->add_flag("--json", json_, "print JSON");

  cancel_ = root_->add_subcommand("cancel", "Cancel every step of a workflow that has not ended");
  cancel_->add_option("id", id_, "workflow id")->required();
  cancel_->add_option("--reason", reason_, "why (kept on the workflow and its tasks)");
}

int WorkflowCommands::Run(client::Client& c) {
  if (mapreduce_->parsed()) return MapReduce(c);
  if (submit_->parsed()) return Submit(c);
  if (get_->parsed()) return Get(c);
  if (ls_->parsed()) return List(c);
  if (wait_->parsed()) return Wait(c, id_, timeout_);
  if (cancel_->parsed()) return Cancel(c);
  return 2;
}

int WorkflowCommands::Submit(client::Client& c) {
  auto spec = ReadWorkflowFile(file_);
  if (!spec.ok()) return Fail(spec.status());
  if (!tenant_.empty()) spec->set_tenant(tenant_);
  if (!name_.empty()) spec->set_name(name_);
  auto w = c.SubmitWorkflow(*spec);
  if (!w.ok()) return Fail(w.status());
  if (json_ && !wait_flag_) {
    fmt::print("{}", Json(*w));
  } else if (quiet_) {
    fmt::print("{}\n", w->id());
  } else {
    fmt::print("submitted workflow {} ({} steps, tenant {})\n", w->id(), w->total(), w->tenant());
  }
  if (!wait_flag_) return 0;
  return Wait(c, w->id(), timeout_);
}

int WorkflowCommands::Get(client::Client& c) {
  auto w = c.GetWorkflow(id_);
  if (!w.ok()) return Fail(w.status());
  if (json_) {
    fmt::print("{}", Json(*w));
  } else {
    PrintWorkflow(*w, &c);
  }
  return 0;
}

int WorkflowCommands::List(client::Client& c) {
  v1::ListWorkflowsRequest req;
  if (!state_.empty()) {
    v1::WorkflowState s;
    if (!v1::WorkflowState_Parse("WORKFLOW_STATE_" + absl::AsciiStrToUpper(state_), &s) ||
        s == v1::WORKFLOW_STATE_UNSPECIFIED) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--state: unknown value '", state_, "' (use running, succeeded, failed or canceled)")));
    }
    req.set_state(s);
  }
  req.set_tenant(tenant_);
  req.set_page_size(limit_);
  req.set_page_token(page_token_);
  auto r = c.ListWorkflows(req);
  if (!r.ok()) return Fail(r.status());
  if (json_) {
    fmt::print("{}", Json(*r));
    return 0;
  }
  fmt::print("{:>8}  {:<10}  {:<24}  {:<10}  {:>11}  {:>5}\n", "ID", "STATE", "NAME", "TENANT",
             "DONE", "AGE");
  for (const v1::Workflow& w : r->workflows()) {
    fmt::print("{:>8}  {:<10}  {:<24}  {:<10}  {:>11}  {:>5}\n", w.id(),
               core::WorkflowStateName(w.state()), Printable(w.name(), 24), w.tenant(),
               absl::StrCat(w.done(), "/", w.total()), Age(w.created_unix_ms()));
  }
  if (!r->next_page_token().empty()) fmt::print("more: --page-token {}\n", r->next_page_token());
  return 0;
}

int WorkflowCommands::Wait(client::Client& c, uint64_t id, const std::string& timeout) {
  bool timed_out = false;
  auto w = Follow(c, id, timeout, &timed_out);
  if (!w.ok()) return Fail(w.status());
  if (timed_out) {
    fmt::print(stderr, "drover: workflow {} still running after {}\n", id, timeout);
    return 2;
  }
  if (json_) {
    fmt::print("{}", Json(*w));
  } else {
    PrintWorkflow(*w, &c);
  }
  return w->state() == v1::WORKFLOW_STATE_SUCCEEDED ? 0 : 1;
}

absl::StatusOr<v1::Workflow> WorkflowCommands::Follow(client::Client& c, uint64_t id,
                                                      const std::string& timeout, bool* timed_out) {
  auto d = ParseDuration("--timeout", timeout);
  if (!d.ok()) return d.status();
  const absl::Time give_up = absl::Now() + *d;
  // Progress goes to stderr, so stdout holds only the answer (a result, JSON).
  const bool tty = ::isatty(STDERR_FILENO) == 1 && !json_;
  int shown_done = -1;
  while (true) {
    // Short waits, so progress shows while the workflow runs.
    const absl::Duration slice =
        std::clamp(give_up - absl::Now(), absl::Milliseconds(1), absl::Seconds(1));
    auto r = c.WaitWorkflow(id, slice);
    if (!r.ok()) return r.status();
    const v1::Workflow& w = r->workflow();
    if (!json_ && w.done() != shown_done) {
      shown_done = w.done();
      const int width = 30;
      const int filled = w.total() > 0 ? width * w.done() / w.total() : width;
      const std::string bar =
          absl::StrCat("[", std::string(filled, '#'), std::string(width - filled, '.'), "]");
      fmt::print(stderr, "{}workflow {} {} {}{}", tty ? "\r" : "", id, bar, Progress(w),
                 tty ? "" : "\n");
    }
    if (!r->timed_out() || absl::Now() >= give_up) {
      if (tty) fmt::print(stderr, "\n");
      *timed_out = r->timed_out();
      return w;
    }
  }
}

int WorkflowCommands::MapReduce(client::Client& c) {
  v1::MapReduceSpec job;
  job.set_name(name_);
  job.set_tenant(tenant_);
  job.mutable_mapper()->set_type(mr_.mapper);
  job.mutable_reducer()->set_type(mr_.reducer);
  job.mutable_reducer()->set_payload(mr_.reduce_payload);
  job.mutable_reducer()->set_payload_json(!mr_.reduce_payload.empty() &&
                                          util::CheckJson(mr_.reduce_payload, "").ok());
  job.set_parallelism(mr_.parallelism);
  job.mutable_mapper()->set_max_attempts(mr_.max_attempts);
  if (!mr_.priority.empty()) {
    v1::Priority p;
    if (!v1::Priority_Parse("PRIORITY_" + absl::AsciiStrToUpper(mr_.priority), &p) ||
        p == v1::PRIORITY_UNSPECIFIED) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--priority: unknown value '", mr_.priority,
                       "' (use critical, high, normal, low or background)")));
    }
    job.mutable_mapper()->set_priority(p);
    job.mutable_reducer()->set_priority(p);
  }
  if (mr_.on_error == "fail_fast") {
    job.set_on_error(v1::FAIL_FAST);
  } else if (mr_.on_error == "continue_on_partial") {
    job.set_on_error(v1::CONTINUE_ON_PARTIAL);
  } else {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--on-error: unknown value '", mr_.on_error, "' (use fail_fast or continue_on_partial)")));
  }
  for (const std::string& item : mr_.items) job.add_items(item);
  if (!mr_.items_file.empty()) {
    std::ifstream file;
    std::istream* in = &std::cin;
    if (mr_.items_file != "-") {
      file.open(mr_.items_file);
      if (!file) {
        return Fail(absl::NotFoundError(absl::StrCat("--items: cannot read ", mr_.items_file)));
      }
      in = &file;
    }
    std::string line;
    while (std::getline(*in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      job.add_items(line);
    }
  }
  if (job.items_size() == 0) {
    return Fail(absl::InvalidArgumentError("--items or --item: give at least one item"));
  }
  // Items that all parse as JSON go as JSON (the map tasks' payloads are then JSON).
  job.set_items_json(std::all_of(job.items().begin(), job.items().end(),
                                 [](const std::string& i) { return util::CheckJson(i, "").ok(); }));
  auto w = c.SubmitMapReduce(job);
  if (!w.ok()) return Fail(w.status());
  if (mr_.detach) {
    fmt::print("{}\n", json_ ? Json(*w) : absl::StrCat(w->id()));
    return 0;
  }
  if (!json_) {
    fmt::print(stderr, "map-reduce job: workflow {} ({} items)\n", w->id(), job.items_size());
  }
  bool timed_out = false;
  auto end = Follow(c, w->id(), timeout_, &timed_out);
  if (!end.ok()) return Fail(end.status());
  if (timed_out) {
    fmt::print(stderr, "drover: workflow {} still running after {}\n", w->id(), timeout_);
    return 2;
  }
  // Which items failed, and the reducer's answer.
  int failed_items = 0;
  absl::StatusOr<v1::Task> reduce = absl::NotFoundError("no reduce step");
  for (const v1::WorkflowTaskRef& ref : end->tasks()) {
    if (ref.step() == "reduce") {
      reduce = c.Get(ref.task_id());
      continue;
    }
    auto t = c.Get(ref.task_id());
    if (!t.ok() || t->state() == v1::TASK_STATE_SUCCEEDED) continue;
    if (++failed_items <= 20) {
      fmt::print(stderr, "  {} ({}): {}\n", ref.step(), core::StateName(t->state()),
                 Printable(t->reason().empty() ? t->last_error() : t->reason(), 120));
    }
  }
  if (failed_items > 0) {
    fmt::print(stderr, "{} of {} items did not succeed\n", failed_items, job.items_size());
  }
  if (json_) {
    fmt::print("{}", Json(*end));
  } else if (reduce.ok() && reduce->state() == v1::TASK_STATE_SUCCEEDED) {
    fmt::print("{}", reduce->result());
    if (!reduce->result().empty() && reduce->result().back() != '\n') fmt::print("\n");
  } else {
    PrintWorkflow(*end, &c);
  }
  return reduce.ok() && reduce->state() == v1::TASK_STATE_SUCCEEDED ? 0 : 1;
}

int WorkflowCommands::Cancel(client::Client& c) {
  auto w = c.CancelWorkflow(id_, reason_);
  if (!w.ok()) return Fail(w.status());
  fmt::print("workflow {} canceled ({})\n", w->id(), Progress(*w));
  return 0;
}

}  // namespace drover::cli
