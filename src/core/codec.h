// The engine's records in and out of the store's rows.
#pragma once

#include "absl/status/statusor.h"
#include "drover/v1/drover.pb.h"
#include "store/store.h"

namespace drover::core {

// Serializes a task into a row; `row.blob` is reused to save allocations.
void TaskToRow(const drover::v1::Task& task, store::TaskRow& row);
// Parses a row's blob; an unreadable blob is an error naming the task id.
absl::StatusOr<drover::v1::Task> RowToTask(const store::TaskRow& row);

void WorkflowToRow(const drover::v1::Workflow& workflow, store::WorkflowRow& row);
absl::StatusOr<drover::v1::Workflow> RowToWorkflow(const store::WorkflowRow& row);

}  // namespace drover::core
