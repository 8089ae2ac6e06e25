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

}  // namespace drover::core
