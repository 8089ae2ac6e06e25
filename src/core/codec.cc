#include "core/codec.h"

#include "absl/strings/str_cat.h"

namespace drover::core {

void TaskToRow(const drover::v1::Task& task, store::TaskRow& row) {
  row.id = task.id();
  row.tenant = task.spec().tenant();
  row.type = task.spec().type();
  row.state = task.state();
  row.priority = task.spec().priority();
  row.updated_unix_ms = task.updated_unix_ms();
  row.blob.clear();
  task.SerializeToString(&row.blob);
}

absl::StatusOr<drover::v1::Task> RowToTask(const store::TaskRow& row) {
  drover::v1::Task task;
  if (!task.ParseFromString(row.blob)) {
    return absl::DataLossError(absl::StrCat("store: task ", row.id, " has an unreadable record"));
  }
  return task;
}

void WorkflowToRow(const drover::v1::Workflow& workflow, store::WorkflowRow& row) {
  row.id = workflow.id();
  row.tenant = workflow.tenant();
  row.state = workflow.state();
  row.updated_unix_ms = workflow.updated_unix_ms();
  row.blob.clear();
  workflow.SerializeToString(&row.blob);
}

absl::StatusOr<drover::v1::Workflow> RowToWorkflow(const store::WorkflowRow& row) {
  drover::v1::Workflow workflow;
  if (!workflow.ParseFromString(row.blob)) {
    return absl::DataLossError(
        absl::StrCat("store: workflow ", row.id, " has an unreadable record"));
  }
  return workflow;
}

}  // namespace drover::core
