// Conformance tests for drover::store drivers, plus tests only the SQLite driver can fail.
//
// StoreConformance runs the same scenarios over every driver (SQLite in a fresh temp dir, and
// memory): a future driver (PostgreSQL) joins by adding one factory to kDrivers.

#include "store/store.h"

#include <sqlite3.h>
#include <stdlib.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pg_test_db.h"
#include "store_fixture.h"

namespace drover::store {
namespace {

using namespace test_support;  // NOLINT: the shared fixture's names

TaskRow MakeRow(uint64_t id, std::string blob = "") {
  TaskRow row;
  row.id = id;
  row.tenant = "tenant-" + std::to_string(id % 3);
  row.type = "type-" + std::to_string(id % 5);
  row.state = static_cast<int>(id % 7);
  row.priority = static_cast<int>(id % 4);
  row.updated_unix_ms = 1'700'000'000'000 + static_cast<int64_t>(id % 1'000'000);
  row.blob = blob.empty() ? "blob-" + std::to_string(id) : std::move(blob);
  return row;
}

void ExpectSameRow(const TaskRow& want, const TaskRow& got) {
  SCOPED_TRACE("task id " + std::to_string(want.id));
  EXPECT_EQ(want.id, got.id);
  EXPECT_EQ(want.tenant, got.tenant);
  EXPECT_EQ(want.type, got.type);
  EXPECT_EQ(want.state, got.state);
  EXPECT_EQ(want.priority, got.priority);
  EXPECT_EQ(want.updated_unix_ms, got.updated_unix_ms);
  EXPECT_EQ(want.blob, got.blob);
}

std::vector<TaskRow> LoadAll(Store& store) {
  std::vector<TaskRow> rows;
  absl::Status status = store.LoadTasks([&](TaskRow&& row) { rows.push_back(std::move(row)); });
  EXPECT_TRUE(status.ok()) << status;
  return rows;
}

std::vector<uint64_t> Ids(const std::vector<TaskRow>& rows) {
  std::vector<uint64_t> ids;
  for (const TaskRow& row : rows) ids.push_back(row.id);
  return ids;
}

// A load row whose every column derives from (pool, minute) and `salt`, so a test can tell
// which write a row came from.
LoadMinute MakeLoad(const std::string& pool, int64_t minute, int64_t salt = 0) {
  LoadMinute row;
  row.pool = pool;
  row.minute = minute;
  row.arrivals = minute % 100 + salt;
  row.dispatches = minute % 90 + salt;
  row.completions = minute % 80 + salt;
  row.service_mean_s = 0.25 * static_cast<double>(minute % 7) + static_cast<double>(salt);
  row.service_p95_s = 1.5 + static_cast<double>(minute % 5 + salt);
  row.queue_depth = minute % 13 + salt;
  row.agents_starting = static_cast<int32_t>(minute % 2 + salt);
  row.agents_idle = static_cast<int32_t>(minute % 3 + salt);
  row.agents_busy = static_cast<int32_t>(minute % 4 + salt);
  row.agents_draining = static_cast<int32_t>(minute % 5 + salt);
  return row;
}

void ExpectSameLoad(const LoadMinute& want, const LoadMinute& got) {
  SCOPED_TRACE("load " + want.pool + "/" + std::to_string(want.minute));
  EXPECT_EQ(want.pool, got.pool);
  EXPECT_EQ(want.minute, got.minute);
  EXPECT_EQ(want.arrivals, got.arrivals);
  EXPECT_EQ(want.dispatches, got.dispatches);
  EXPECT_EQ(want.completions, got.completions);
  EXPECT_EQ(want.service_mean_s, got.service_mean_s);
  EXPECT_EQ(want.service_p95_s, got.service_p95_s);
  EXPECT_EQ(want.queue_depth, got.queue_depth);
  EXPECT_EQ(want.agents_starting, got.agents_starting);
  EXPECT_EQ(want.agents_idle, got.agents_idle);
  EXPECT_EQ(want.agents_busy, got.agents_busy);
  EXPECT_EQ(want.agents_draining, got.agents_draining);
}

std::vector<LoadMinute> ReadLoad(Store& store, const std::string& pool, int64_t from, int64_t to,
                                 int64_t max_rows = 0) {
  std::vector<LoadMinute> rows;
  absl::Status status = store.ReadLoadHistory(
      pool, from, to, max_rows, [&](LoadMinute&& row) { rows.push_back(std::move(row)); });
  EXPECT_TRUE(status.ok()) << status;
  return rows;
}

std::vector<int64_t> Minutes(const std::vector<LoadMinute>& rows) {
  std::vector<int64_t> minutes;
  for (const LoadMinute& row : rows) minutes.push_back(row.minute);
  return minutes;
}

std::vector<std::string> LoadPools(Store& store) {
  absl::StatusOr<std::vector<std::string>> pools = store.LoadHistoryPools();
  EXPECT_TRUE(pools.ok()) << pools.status();
  return pools.ok() ? *pools : std::vector<std::string>{};
}

constexpr int64_t kEnd = std::numeric_limits<int64_t>::max();

class StoreConformance : public StoreFixture {};

TEST_P(StoreConformance, EmptyStoreLoadsNothing) {
  EXPECT_TRUE(LoadAll(*store_).empty());
  absl::StatusOr<std::optional<TaskRow>> task = store_->GetTask(1);
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_FALSE(task->has_value());
  EXPECT_EQ(store_->Stats().commits, 0);
  EXPECT_EQ(store_->Stats().rows_written, 0);
}

TEST_P(StoreConformance, CommittedRowsLoadInIdOrderWithAllColumnsIntact) {
  const std::string with_nuls("a\0b\0\0c\xff\x80", 8);
  std::vector<TaskRow> rows = {MakeRow(30, with_nuls), MakeRow(10), MakeRow(20)};
  rows[1].blob = std::string(4096, '\0');  // all NULs, larger than a small-string buffer
  rows[2].state = -1;
  rows[2].priority = 2'000'000'000;
  rows[2].updated_unix_ms = -5;
  WriteBatch batch;
  batch.upserts = rows;
  Commit(batch);

  std::vector<TaskRow> loaded = LoadAll(*store_);
  ASSERT_EQ(Ids(loaded), (std::vector<uint64_t>{10, 20, 30}));
  ExpectSameRow(rows[1], loaded[0]);
  ExpectSameRow(rows[2], loaded[1]);
  ExpectSameRow(rows[0], loaded[2]);
  EXPECT_EQ(loaded[2].blob.size(), 8u);
}

TEST_P(StoreConformance, EmptyStringsAndEmptyBlobRoundTrip) {
  TaskRow row;
  row.id = 1;
  WriteBatch batch;
  batch.upserts.push_back(row);
  Commit(batch);

  absl::StatusOr<std::optional<TaskRow>> got = store_->GetTask(1);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  ExpectSameRow(row, **got);
}

TEST_P(StoreConformance, WorkflowRowsLoadAndReadBackByIdAndUpsertsReplaceThem) {
  WorkflowRow a;
  a.id = 5;
  a.tenant = "t";
  a.state = 2;
  a.updated_unix_ms = 1'700'000'000'123;
  a.blob = std::string("w\0f", 3);
  WorkflowRow b = a;
  b.id = 3;
  b.blob = "other";
  WriteBatch batch;
  batch.workflows = {a, b};
  Commit(batch);
  a.state = 3;
  a.blob = "ended";
  batch.clear();
  batch.workflows = {a};
  Commit(batch);

  std::vector<uint64_t> loaded;
  ASSERT_TRUE(store_->LoadWorkflows([&](WorkflowRow&& r) { loaded.push_back(r.id); }).ok());
  EXPECT_EQ(loaded, (std::vector<uint64_t>{3, 5}));
  absl::StatusOr<std::optional<WorkflowRow>> got = store_->GetWorkflow(5);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->tenant, "t");
  EXPECT_EQ((*got)->state, 3);
  EXPECT_EQ((*got)->updated_unix_ms, 1'700'000'000'123);
  EXPECT_EQ((*got)->blob, "ended");
  absl::StatusOr<std::optional<WorkflowRow>> none = store_->GetWorkflow(4);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  none = store_->GetWorkflow(std::numeric_limits<uint64_t>::max());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
}

TEST_P(StoreConformance, UpsertReplacesExistingRow) {
  WriteBatch batch;
  batch.upserts.push_back(MakeRow(7, "old"));
  Commit(batch);

  TaskRow replacement = MakeRow(7, "new");
  replacement.tenant = "other";
  replacement.type = "other-type";
  replacement.state = 5;
  replacement.priority = 3;
  replacement.updated_unix_ms = 42;
  batch.clear();
  batch.upserts.push_back(replacement);
  Commit(batch);

  std::vector<TaskRow> loaded = LoadAll(*store_);
  ASSERT_EQ(loaded.size(), 1u);
  ExpectSameRow(replacement, loaded[0]);
}

TEST_P(StoreConformance, LastUpsertOfAnIdWithinOneBatchWins) {
  WriteBatch batch;
  batch.upserts = {MakeRow(1, "first"), MakeRow(2), MakeRow(1, "second")};
  Commit(batch);

  std::vector<TaskRow> loaded = LoadAll(*store_);
  ASSERT_EQ(Ids(loaded), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(loaded[0].blob, "second");
}

TEST_P(StoreConformance, DeleteRemovesRowsAndIgnoresUnknownIds) {
  WriteBatch batch;
  batch.upserts = {MakeRow(1), MakeRow(2), MakeRow(3)};
  Commit(batch);

  batch.clear();
  batch.deletes = {2, 99};
  Commit(batch);

  EXPECT_EQ(Ids(LoadAll(*store_)), (std::vector<uint64_t>{1, 3}));
  absl::StatusOr<std::optional<TaskRow>> gone = store_->GetTask(2);
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_FALSE(gone->has_value());
}

TEST_P(StoreConformance, BatchAppliesUpsertsThenDeletesThenMeta) {
  WriteBatch batch;
  batch.upserts = {MakeRow(5), MakeRow(6)};
  batch.deletes = {5};  // deletes run after upserts: the row upserted above is gone
  batch.meta = {{"next_task_id", "7"}};
  Commit(batch);

  EXPECT_EQ(Ids(LoadAll(*store_)), (std::vector<uint64_t>{6}));
  absl::StatusOr<std::optional<std::string>> meta = store_->GetMeta("next_task_id");
  ASSERT_TRUE(meta.ok()) << meta.status();
  EXPECT_EQ(*meta, std::optional<std::string>("7"));
}

TEST_P(StoreConformance, MetaIsSetReadAndOverwritten) {
  WriteBatch batch;
  batch.meta = {{"epoch", "1"}, {"next_task_id", "100"}};
  Commit(batch);
  batch.clear();
  batch.meta = {{"epoch", "2"}, {"epoch", "3"}};  // in order: the last value wins
  Commit(batch);

  absl::StatusOr<std::optional<std::string>> epoch = store_->GetMeta("epoch");
  ASSERT_TRUE(epoch.ok()) << epoch.status();
  EXPECT_EQ(*epoch, std::optional<std::string>("3"));
  absl::StatusOr<std::optional<std::string>> next = store_->GetMeta("next_task_id");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(*next, std::optional<std::string>("100"));
}

TEST_P(StoreConformance, MissingMetaKeyIsNullopt) {
  WriteBatch batch;
  batch.meta = {{"epoch", "1"}};
  Commit(batch);

  absl::StatusOr<std::optional<std::string>> missing = store_->GetMeta("no-such-key");
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_FALSE(missing->has_value());
}

TEST_P(StoreConformance, GetTaskFindsCommittedRowAndMissesUnknownId) {
  WriteBatch batch;
  batch.upserts = {MakeRow(11), MakeRow(12)};
  Commit(batch);

  absl::StatusOr<std::optional<TaskRow>> hit = store_->GetTask(12);
  ASSERT_TRUE(hit.ok()) << hit.status();
  ASSERT_TRUE(hit->has_value());
  ExpectSameRow(MakeRow(12), **hit);

  absl::StatusOr<std::optional<TaskRow>> miss = store_->GetTask(13);
  ASSERT_TRUE(miss.ok()) << miss.status();
  EXPECT_FALSE(miss->has_value());
  absl::StatusOr<std::optional<TaskRow>> huge = store_->GetTask(UINT64_MAX);
  ASSERT_TRUE(huge.ok()) << huge.status();
  EXPECT_FALSE(huge->has_value());
}

TEST_P(StoreConformance, TenThousandRowsCommitInOneBatch) {
  constexpr uint64_t kRows = 10'000;
  WriteBatch batch;
  for (uint64_t id = kRows; id >= 1; --id) batch.upserts.push_back(MakeRow(id));
  Commit(batch);

  std::vector<TaskRow> loaded = LoadAll(*store_);
  ASSERT_EQ(loaded.size(), kRows);
  for (uint64_t i = 0; i < kRows; ++i) ASSERT_EQ(loaded[i].id, i + 1);
  ExpectSameRow(MakeRow(1), loaded.front());
  ExpectSameRow(MakeRow(kRows), loaded.back());
  EXPECT_EQ(store_->Stats().commits, 1);
  EXPECT_EQ(store_->Stats().rows_written, static_cast<int64_t>(kRows));
}

TEST_P(StoreConformance, StatsCountCommitsAndTaskRowsWritten) {
  WriteBatch batch;
  batch.upserts = {MakeRow(1), MakeRow(2)};
  batch.meta = {{"epoch", "1"}};
  Commit(batch);
  batch.clear();
  batch.deletes = {1, 404};
  Commit(batch);

  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.commits, 2);
  EXPECT_EQ(stats.rows_written, 4);  // 2 upserts + 2 deletes; meta rows are not task rows
}

TEST_P(StoreConformance, EmptyBatchIsANoOpAndNotCounted) {
  Commit(WriteBatch{});
  EXPECT_EQ(store_->Stats().commits, 0);
  EXPECT_TRUE(LoadAll(*store_).empty());
}

TEST_P(StoreConformance, OutOfRangeIdRejectsTheWholeBatch) {
  WriteBatch batch;
  batch.upserts = {MakeRow(1), MakeRow(uint64_t{1} << 63)};
  batch.meta = {{"epoch", "1"}};
  absl::Status status = store_->Commit(batch);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("9223372036854775808"), std::string::npos) << status;

  batch.clear();
  batch.deletes = {UINT64_MAX};
  EXPECT_EQ(store_->Commit(batch).code(), absl::StatusCode::kInvalidArgument);

  EXPECT_TRUE(LoadAll(*store_).empty());
  absl::StatusOr<std::optional<std::string>> epoch = store_->GetMeta("epoch");
  ASSERT_TRUE(epoch.ok()) << epoch.status();
  EXPECT_FALSE(epoch->has_value());
  EXPECT_EQ(store_->Stats().commits, 0);
}

TEST_P(StoreConformance, LargestAllowedIdRoundTrips) {
  const uint64_t max_id = static_cast<uint64_t>(INT64_MAX);
  WriteBatch batch;
  batch.upserts = {MakeRow(max_id), MakeRow(0)};
  Commit(batch);
  EXPECT_EQ(Ids(LoadAll(*store_)), (std::vector<uint64_t>{0, max_id}));
}

TEST_P(StoreConformance, CommitFromInsideLoadTasksIsRefused) {
  WriteBatch batch;
  batch.upserts = {MakeRow(1), MakeRow(2)};
  Commit(batch);

  std::vector<absl::StatusCode> codes;
  absl::Status status = store_->LoadTasks([&](TaskRow&& row) {
    WriteBatch nested;
    nested.deletes = {row.id};
    codes.push_back(store_->Commit(nested).code());
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(codes, (std::vector<absl::StatusCode>{absl::StatusCode::kFailedPrecondition,
                                                  absl::StatusCode::kFailedPrecondition}));
  EXPECT_EQ(LoadAll(*store_).size(), 2u);
}

TEST_P(StoreConformance, GetTaskWorksInsideLoadTasks) {
  WriteBatch batch;
  batch.upserts = {MakeRow(1), MakeRow(2)};
  Commit(batch);

  int found = 0;
  absl::Status status = store_->LoadTasks([&](TaskRow&& row) {
    absl::StatusOr<std::optional<TaskRow>> again = store_->GetTask(row.id);
    if (again.ok() && again->has_value()) ++found;
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(found, 2);
}

// Rows 1..10: odd ids in state 5, even in state 2; updated at 1000 + id.
void CommitPruneFixture(Store& store) {
  WriteBatch batch;
  for (uint64_t id = 1; id <= 10; ++id) {
    TaskRow row = MakeRow(id);
    row.state = id % 2 == 1 ? 5 : 2;
    row.updated_unix_ms = 1000 + static_cast<int64_t>(id);
    batch.upserts.push_back(row);
  }
  ASSERT_TRUE(store.Commit(batch).ok());
}

TEST_P(StoreConformance, PruneRemovesOnlyRowsInTheStatesAndOlderThanTheCutoff) {
  CommitPruneFixture(*store_);
  // Cutoff 1008: rows updated at 1001..1007 qualify by age; of those the odd ids by state.
  absl::StatusOr<PruneResult> r = store_->PruneRows(
      {.from_id = 0, .max_scan = 100, .states = {5}, .updated_before_unix_ms = 1008});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->scanned, 10);
  EXPECT_EQ(r->deleted, 4);  // 1, 3, 5, 7
  EXPECT_EQ(r->next_id, 0u);
  EXPECT_EQ(Ids(LoadAll(*store_)), (std::vector<uint64_t>{2, 4, 6, 8, 9, 10}));
  EXPECT_EQ(store_->Stats().rows_pruned, 4);
}

TEST_P(StoreConformance, PruneWalksTheTableInStepsOfMaxScan) {
  CommitPruneFixture(*store_);
  PruneStep step{.from_id = 0, .max_scan = 4, .states = {5, 2}, .updated_before_unix_ms = 5000};
  std::vector<int64_t> scanned;
  std::vector<uint64_t> starts;
  do {
    starts.push_back(step.from_id);
    absl::StatusOr<PruneResult> r = store_->PruneRows(step);
    ASSERT_TRUE(r.ok()) << r.status();
    scanned.push_back(r->scanned);
    step.from_id = r->next_id;
  } while (step.from_id != 0);
  EXPECT_EQ(starts, (std::vector<uint64_t>{0, 5, 9}));
  EXPECT_EQ(scanned, (std::vector<int64_t>{4, 4, 2}));
  EXPECT_TRUE(LoadAll(*store_).empty());
}

TEST_P(StoreConformance, PruneEndingExactlyAtTheLastRowReportsTheEnd) {
  CommitPruneFixture(*store_);
  absl::StatusOr<PruneResult> r =
      store_->PruneRows({.from_id = 7, .max_scan = 4, .states = {9}, .updated_before_unix_ms = 0});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->scanned, 4);
  EXPECT_EQ(r->deleted, 0);
  EXPECT_EQ(r->next_id, 0u);
  EXPECT_EQ(LoadAll(*store_).size(), 10u);
}

TEST_P(StoreConformance, PruneRefusesAnEmptyStateListAndAZeroScan) {
  CommitPruneFixture(*store_);
  absl::StatusOr<PruneResult> r = store_->PruneRows({.max_scan = 10, .states = {}});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("states"));
  r = store_->PruneRows({.max_scan = 0, .states = {5}});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("max_scan"));
  EXPECT_EQ(LoadAll(*store_).size(), 10u);
}

TEST_P(StoreConformance, EmptyStoreHasNoLoadHistory) {
  EXPECT_TRUE(ReadLoad(*store_, "web", 0, kEnd).empty());
  EXPECT_TRUE(LoadPools(*store_).empty());
  absl::StatusOr<int64_t> pruned = store_->PruneLoadHistory(kEnd);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 0);
}

TEST_P(StoreConformance, LoadRowsReadBackInMinuteOrderWithAllColumnsIntact) {
  WriteBatch batch;
  // Committed out of order, over two batches: reads are by minute, not by arrival.
  batch.load = {MakeLoad("web", 28'000'005), MakeLoad("web", 28'000'001)};
  Commit(batch);
  batch.load = {MakeLoad("web", 28'000'003), MakeLoad("web", 28'000'002)};
  Commit(batch);
  std::vector<LoadMinute> rows = ReadLoad(*store_, "web", 0, kEnd);
  ASSERT_EQ(Minutes(rows), (std::vector<int64_t>{28'000'001, 28'000'002, 28'000'003, 28'000'005}));
  for (const LoadMinute& row : rows) ExpectSameLoad(MakeLoad("web", row.minute), row);
}

TEST_P(StoreConformance, LoadUpsertReplacesTheWholeMinuteAndTheLastOfABatchWins) {
  WriteBatch batch;
  batch.load = {MakeLoad("web", 10, /*salt=*/1), MakeLoad("web", 11, 1)};
  Commit(batch);
  // An import writes only arrivals: every other column of the minute must go back to 0.
  LoadMinute imported;
  imported.pool = "web";
  imported.minute = 10;
  imported.arrivals = 77;
  batch.load = {MakeLoad("web", 11, 2), imported, MakeLoad("web", 11, 3)};
  Commit(batch);
  std::vector<LoadMinute> rows = ReadLoad(*store_, "web", 0, kEnd);
  ASSERT_EQ(Minutes(rows), (std::vector<int64_t>{10, 11}));
  ExpectSameLoad(imported, rows[0]);
  ExpectSameLoad(MakeLoad("web", 11, 3), rows[1]);
}

TEST_P(StoreConformance, LoadRangeIsFromInclusiveToExclusiveAndOnePoolOnly) {
  WriteBatch batch;
  // Pool names that share prefixes, so a driver comparing prefixes would mix them up.
  for (const char* pool : {"a", "a.b", "ab", "b"}) {
    for (int64_t m = 100; m < 110; ++m) batch.load.push_back(MakeLoad(pool, m));
  }
  Commit(batch);
  EXPECT_EQ(Minutes(ReadLoad(*store_, "a", 103, 106)), (std::vector<int64_t>{103, 104, 105}));
  EXPECT_EQ(ReadLoad(*store_, "a.b", 0, kEnd).size(), 10u);
  EXPECT_EQ(Minutes(ReadLoad(*store_, "ab", 109, 200)), (std::vector<int64_t>{109}));
  EXPECT_TRUE(ReadLoad(*store_, "a", 110, 200).empty());
  EXPECT_TRUE(ReadLoad(*store_, "a", 105, 105).empty());  // empty range
  EXPECT_TRUE(ReadLoad(*store_, "a", 106, 103).empty());  // reversed range
  EXPECT_TRUE(ReadLoad(*store_, "c", 0, kEnd).empty());   // unknown pool
  for (const LoadMinute& row : ReadLoad(*store_, "ab", 0, kEnd)) EXPECT_EQ(row.pool, "ab");
}

TEST_P(StoreConformance, LoadReadStopsAfterMaxRows) {
  WriteBatch batch;
  for (int64_t m = 0; m < 50; m += 5) batch.load.push_back(MakeLoad("web", m));  // gaps
  Commit(batch);
  EXPECT_EQ(Minutes(ReadLoad(*store_, "web", 7, kEnd, 3)), (std::vector<int64_t>{10, 15, 20}));
  EXPECT_EQ(ReadLoad(*store_, "web", 0, kEnd, 0).size(), 10u);  // 0: no limit
  EXPECT_EQ(ReadLoad(*store_, "web", 0, kEnd, 1000).size(), 10u);
  // The overload without max_rows reads everything.
  int n = 0;
  ASSERT_TRUE(store_->ReadLoadHistory("web", 0, kEnd, [&](LoadMinute&&) { ++n; }).ok());
  EXPECT_EQ(n, 10);
}

TEST_P(StoreConformance, PruneLoadHistoryDeletesOlderMinutesOfEveryPool) {
  WriteBatch batch;
  for (int64_t m = 1000; m < 1010; ++m) batch.load.push_back(MakeLoad("web", m));
  for (int64_t m = 1000; m < 1004; ++m) batch.load.push_back(MakeLoad("batch", m));
  Commit(batch);
  absl::StatusOr<int64_t> pruned = store_->PruneLoadHistory(1005);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 5 + 4);
  EXPECT_EQ(Minutes(ReadLoad(*store_, "web", 0, kEnd)),
            (std::vector<int64_t>{1005, 1006, 1007, 1008, 1009}));
  EXPECT_TRUE(ReadLoad(*store_, "batch", 0, kEnd).empty());
  EXPECT_EQ(LoadPools(*store_), (std::vector<std::string>{"web"}));
  EXPECT_EQ(store_->Stats().load_rows_pruned, 9);
  EXPECT_EQ(store_->Stats().rows_pruned, 0);  // task rows only
  pruned = store_->PruneLoadHistory(1005);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 0);
}

TEST_P(StoreConformance, LoadHistoryPoolsAreListedOnceEachInNameOrder) {
  WriteBatch batch;
  for (const char* pool : {"web", "a.b", "batch", "a"}) {
    for (int64_t m = 0; m < 3; ++m) batch.load.push_back(MakeLoad(pool, m));
  }
  Commit(batch);
  EXPECT_EQ(LoadPools(*store_), (std::vector<std::string>{"a", "a.b", "batch", "web"}));
}

TEST_P(StoreConformance, LoadRowsAreCountedApartFromTaskRows) {
  WriteBatch batch;
  batch.load = {MakeLoad("web", 1), MakeLoad("web", 2)};
  Commit(batch);  // a batch of load rows only is a commit
  batch.upserts = {MakeRow(1)};
  batch.load = {MakeLoad("web", 3)};
  Commit(batch);
  EXPECT_EQ(store_->Stats().commits, 2);
  EXPECT_EQ(store_->Stats().rows_written, 1);
  EXPECT_EQ(store_->Stats().load_rows_written, 3);
}

TEST_P(StoreConformance, AnInvalidLoadRowRejectsTheWholeBatchNamingTheField) {
  struct Case {
    std::string field;
    std::function<void(LoadMinute&)> spoil;
  };
  const Case cases[] = {
      {"pool", [](LoadMinute& r) { r.pool.clear(); }},
      {"minute", [](LoadMinute& r) { r.minute = -1; }},
      {"arrivals", [](LoadMinute& r) { r.arrivals = -1; }},
      {"queue_depth", [](LoadMinute& r) { r.queue_depth = -3; }},
      {"service_mean_s", [](LoadMinute& r) { r.service_mean_s = std::nan(""); }},
      {"service_p95_s", [](LoadMinute& r) { r.service_p95_s = INFINITY; }},
      {"agents_", [](LoadMinute& r) { r.agents_busy = -1; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    WriteBatch batch;
    batch.upserts = {MakeRow(1)};
    batch.load = {MakeLoad("web", 1), MakeLoad("web", 2)};
    c.spoil(batch.load[1]);
    absl::Status status = store_->Commit(batch);
    ASSERT_FALSE(status.ok());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr(c.field));
  }
  EXPECT_TRUE(LoadAll(*store_).empty());
  EXPECT_TRUE(ReadLoad(*store_, "web", 0, kEnd).empty());
  EXPECT_EQ(store_->Stats().commits, 0);
}

std::vector<AuditRow> ReadAuditAll(Store& store, AuditQuery q) {
  std::vector<AuditRow> out;
  absl::Status st = store.ReadAudit(q, [&](AuditRow&& r) { out.push_back(std::move(r)); });
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

TEST_P(StoreConformance, AuditRecordsAppendInOrderAndFilter) {
  WriteBatch batch;
  batch.audit = {AuditRow{0, 1000, "alice", "team-a", "one"},
                 AuditRow{0, 2000, "bob", "team-b", std::string("t\0wo", 4)},
                 AuditRow{0, 3000, "alice", "", "three"}};
  ASSERT_TRUE(store_->Commit(batch).ok());
  WriteBatch more;
  more.audit = {AuditRow{0, 4000, "carol", "team-a", "four"}};
  ASSERT_TRUE(store_->Commit(more).ok());

  std::vector<AuditRow> all = ReadAuditAll(*store_, AuditQuery{});
  ASSERT_EQ(all.size(), 4u);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_LT(all[i - 1].seq, all[i].seq);
  EXPECT_EQ(all[0].blob, "one");
  EXPECT_EQ(all[1].blob, std::string("t\0wo", 4));  // bytes, not text
  EXPECT_EQ(all[3].principal, "carol");

  AuditQuery by_principal;
  by_principal.principal = "alice";
  EXPECT_EQ(ReadAuditAll(*store_, by_principal).size(), 2u);
  AuditQuery by_tenant;
  by_tenant.tenant = "team-a";
  EXPECT_EQ(ReadAuditAll(*store_, by_tenant).size(), 2u);
  AuditQuery since;
  since.since_unix_ms = 2500;
  EXPECT_EQ(ReadAuditAll(*store_, since).size(), 2u);
  AuditQuery page;
  page.limit = 2;
  std::vector<AuditRow> first = ReadAuditAll(*store_, page);
  ASSERT_EQ(first.size(), 2u);
  page.after_seq = first.back().seq;
  std::vector<AuditRow> second = ReadAuditAll(*store_, page);
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second[0].blob, "three");
  AuditQuery bad;
  bad.limit = 0;
  EXPECT_EQ(store_->ReadAudit(bad, [](AuditRow&&) {}).code(), absl::StatusCode::kInvalidArgument);

  absl::StatusOr<int64_t> pruned = store_->PruneAudit(2500);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 2);
  std::vector<AuditRow> left = ReadAuditAll(*store_, AuditQuery{});
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(left[0].blob, "three");
  EXPECT_EQ(store_->Stats().audit_rows_written, 4);
  EXPECT_EQ(store_->Stats().audit_rows_pruned, 2);
}

TEST_P(StoreConformance, DescribeNamesTheDriver) {
  const std::string driver = GetParam().name.substr(0, GetParam().name.find('_'));
  EXPECT_EQ(store_->Describe().rfind(driver, 0), 0u) << store_->Describe();
}

INSTANTIATE_TEST_SUITE_P(Drivers, StoreConformance, ::testing::ValuesIn(kDrivers),
                         [](const ::testing::TestParamInfo<Driver>& info) {
                           return info.param.name;
                         });

// ---- SQLite only --------------------------------------------------------------------------

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(dir_.ok()) << "mkdtemp failed"; }

  std::unique_ptr<Store> Open(Durability durability = Durability::kNormal) {
    absl::StatusOr<std::unique_ptr<Store>> store = OpenSqliteStore(path_, durability);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

  TempDir dir_;
  const std::string path_ = dir_.File("drover.db");
};

TEST_F(SqliteStoreTest, DescribeIsSqliteColonPath) {
  std::unique_ptr<Store> store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->Describe(), "sqlite:" + path_);
}

TEST_F(SqliteStoreTest, DataSurvivesCloseAndReopen) {
  std::vector<TaskRow> rows = {MakeRow(2, std::string("x\0y", 3)), MakeRow(1)};
  {
    std::unique_ptr<Store> store = Open(Durability::kFull);
    ASSERT_NE(store, nullptr);
    WriteBatch batch;
    batch.upserts = rows;
    batch.meta = {{"epoch", "9"}};
    ASSERT_TRUE(store->Commit(batch).ok());
  }
  std::unique_ptr<Store> store = Open();
  ASSERT_NE(store, nullptr);
  std::vector<TaskRow> loaded = LoadAll(*store);
  ASSERT_EQ(Ids(loaded), (std::vector<uint64_t>{1, 2}));
  ExpectSameRow(rows[1], loaded[0]);
  ExpectSameRow(rows[0], loaded[1]);
  absl::StatusOr<std::optional<std::string>> epoch = store->GetMeta("epoch");
  ASSERT_TRUE(epoch.ok()) << epoch.status();
  EXPECT_EQ(*epoch, std::optional<std::string>("9"));
  EXPECT_EQ(store->Stats().commits, 0);  // stats count this process's commits only
}

TEST_F(SqliteStoreTest, LoadHistorySurvivesCloseAndReopen) {
  {
    std::unique_ptr<Store> store = Open();
    ASSERT_NE(store, nullptr);
    WriteBatch batch;
    for (int64_t m = 0; m < 1440; ++m) batch.load.push_back(MakeLoad("web", 28'000'000 + m));
    batch.load.push_back(MakeLoad("batch", 5));
    ASSERT_TRUE(store->Commit(batch).ok());
  }
  std::unique_ptr<Store> store = Open();
  ASSERT_NE(store, nullptr);
  std::vector<LoadMinute> rows = ReadLoad(*store, "web", 0, kEnd);
  ASSERT_EQ(rows.size(), 1440u);
  for (const LoadMinute& row : rows) ExpectSameLoad(MakeLoad("web", row.minute), row);
  EXPECT_EQ(LoadPools(*store), (std::vector<std::string>{"batch", "web"}));
}

TEST_F(SqliteStoreTest, UpgradeOfAVersion2DatabaseAddsLoadHistoryAndKeepsTasks) {
  {
    std::unique_ptr<Store> store = Open();
    ASSERT_NE(store, nullptr);
    WriteBatch batch;
    batch.upserts = {MakeRow(1), MakeRow(2)};
    ASSERT_TRUE(store->Commit(batch).ok());
  }
  // What a database written before 0003_load_history looks like.
  {
    RawDb raw(path_);
    raw.Exec("DROP TABLE load_history");
    raw.Exec("DROP TABLE audit");
    raw.Exec("DROP TABLE events");
    raw.Exec("PRAGMA user_version = 2");
  }
  std::unique_ptr<Store> store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(Ids(LoadAll(*store)), (std::vector<uint64_t>{1, 2}));
  WriteBatch batch;
  batch.load = {MakeLoad("web", 1)};
  ASSERT_TRUE(store->Commit(batch).ok());
  EXPECT_EQ(ReadLoad(*store, "web", 0, kEnd).size(), 1u);
  EXPECT_EQ(RawDb(path_).Query("PRAGMA user_version"), "5");
}

TEST_F(SqliteStoreTest, AuditRecordsCannotBeUpdated) {
  std::unique_ptr<Store> store = Open();
  ASSERT_NE(store, nullptr);
  WriteBatch batch;
  batch.audit = {AuditRow{0, 5, "alice", "team-a", "x"}};
  ASSERT_TRUE(store->Commit(batch).ok());
  RawDb raw(path_);
  EXPECT_THAT(raw.ExecError("UPDATE audit SET principal = 'mallory'"),
              ::testing::HasSubstr("audit records are append-only"));
  EXPECT_EQ(raw.Query("SELECT principal FROM audit"), "alice");
}

// The `detail` column of every step of EXPLAIN QUERY PLAN for `sql`, one per line.
std::string QueryPlan(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string plan;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << "sqlite3_open_v2(" << path << "): " << sqlite3_errmsg(db);
  }
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, ("EXPLAIN QUERY PLAN " + sql).c_str(), -1, &stmt, nullptr) !=
      SQLITE_OK) {
    ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db);
  }
  while (stmt != nullptr && sqlite3_step(stmt) == SQLITE_ROW) {
    plan += reinterpret_cast<const char*>(sqlite3_column_text(stmt, 3));
    plan += "\n";
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return plan;
}

TEST_F(SqliteStoreTest, LoadHistoryQueriesUseAnIndexAndNeverSort) {
  ASSERT_NE(Open(), nullptr);
  // The retention sweep goes by age across pools: the minute index, not a table scan.
  EXPECT_THAT(QueryPlan(path_, "DELETE FROM load_history WHERE minute < 5"),
              ::testing::HasSubstr("load_history_by_minute"));
  // A pool's range is a range of the primary key, already in minute order.
  const std::string range = QueryPlan(path_,
                                      "SELECT minute FROM load_history WHERE pool = 'a' AND "
                                      "minute >= 1 AND minute < 9 ORDER BY minute LIMIT 10");
  EXPECT_THAT(range, ::testing::HasSubstr("PRIMARY KEY (pool=?"));
  EXPECT_THAT(range, ::testing::Not(::testing::HasSubstr("TEMP B-TREE")));
}

TEST_F(SqliteStoreTest, ReopenAppliesNoMigrationTwice) {
  Open().reset();
  std::string version_after_create = RawDb(path_).Query("PRAGMA user_version");
  EXPECT_NE(version_after_create, "0");
  EXPECT_NE(version_after_create, "");

  // The migrations use plain CREATE TABLE: running one again would fail this open.
  std::unique_ptr<Store> store = Open();
  ASSERT_NE(store, nullptr);
  store.reset();
  EXPECT_EQ(RawDb(path_).Query("PRAGMA user_version"), version_after_create);
}

TEST_F(SqliteStoreTest, JournalModeIsWal) {
  std::unique_ptr<Store> store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(RawDb(path_).Query("PRAGMA journal_mode"), "wal");
}

TEST_F(SqliteStoreTest, OpenInsideMissingDirectoryFailsNamingThePath) {
  const std::string path = dir_.File("no/such/dir/drover.db");
  absl::StatusOr<std::unique_ptr<Store>> store = OpenSqliteStore(path, Durability::kNormal);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find(path), std::string::npos) << store.status();
}

TEST_F(SqliteStoreTest, OpenOfAFileThatIsNotADatabaseFailsNamingThePath) {
  const std::string text = "this is a text file, not a SQLite database\n";
  {
    std::ofstream out(path_, std::ios::binary);
    for (int i = 0; i < 100; ++i) out << text;
  }
  absl::StatusOr<std::unique_ptr<Store>> store = OpenSqliteStore(path_, Durability::kNormal);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_NE(store.status().message().find(path_), std::string::npos) << store.status();
  // The foreign file is left as it was.
  EXPECT_EQ(fs::file_size(path_), text.size() * 100);
}

TEST_F(SqliteStoreTest, OpenOfAnotherApplicationsDatabaseFails) {
  RawDb(path_).Exec("CREATE TABLE photos (id INTEGER PRIMARY KEY, jpeg BLOB)");
  absl::StatusOr<std::unique_ptr<Store>> store = OpenSqliteStore(path_, Durability::kNormal);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_NE(store.status().message().find(path_), std::string::npos) << store.status();
}

TEST_F(SqliteStoreTest, OpenOfANewerSchemaVersionFails) {
  RawDb(path_).Exec("PRAGMA user_version = 1000000");
  absl::StatusOr<std::unique_ptr<Store>> store = OpenSqliteStore(path_, Durability::kNormal);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_NE(store.status().message().find(path_), std::string::npos) << store.status();
  EXPECT_NE(store.status().message().find("1000000"), std::string::npos) << store.status();
  EXPECT_EQ(RawDb(path_).Query("PRAGMA user_version"), "1000000");
}

TEST_F(SqliteStoreTest, EmptyPathIsInvalidArgument) {
  EXPECT_EQ(OpenSqliteStore("", Durability::kNormal).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SqliteStoreTest, FailingStatementRollsBackTheWholeBatchAndStoreStaysUsable) {
  std::unique_ptr<Store> store = Open();
  ASSERT_NE(store, nullptr);
  // A trigger, added behind the store's back, makes the second upsert of the batch fail.
  RawDb(path_).Exec(
      "CREATE TRIGGER fail_666 BEFORE INSERT ON tasks WHEN NEW.id = 666 "
      "BEGIN SELECT RAISE(ABORT, 'refusing task 666'); END");

  WriteBatch batch;
  batch.upserts = {MakeRow(1), MakeRow(666), MakeRow(2)};
  batch.meta = {{"epoch", "1"}};
  absl::Status status = store->Commit(batch);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_NE(status.message().find("refusing task 666"), std::string::npos) << status;
  EXPECT_NE(status.message().find(path_), std::string::npos) << status;

  EXPECT_TRUE(LoadAll(*store).empty());
  absl::StatusOr<std::optional<std::string>> epoch = store->GetMeta("epoch");
  ASSERT_TRUE(epoch.ok()) << epoch.status();
  EXPECT_FALSE(epoch->has_value());
  EXPECT_EQ(store->Stats().commits, 0);
  EXPECT_EQ(store->Stats().rows_written, 0);

  batch.upserts = {MakeRow(1), MakeRow(2)};
  status = store->Commit(batch);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(Ids(LoadAll(*store)), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(store->Stats().commits, 1);
}

TEST_F(SqliteStoreTest, SecondConnectionSeesCommittedRows) {
  std::unique_ptr<Store> store = Open();
  ASSERT_NE(store, nullptr);
  WriteBatch batch;
  batch.upserts = {MakeRow(1), MakeRow(2), MakeRow(3)};
  ASSERT_TRUE(store->Commit(batch).ok());
  EXPECT_EQ(RawDb(path_).Query("SELECT count(*) FROM tasks"), "3");
}

}  // namespace
}  // namespace drover::store
