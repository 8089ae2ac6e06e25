// The load history part of api::Runtime, the calls the pool thread and the Service make:
// rows appended from any thread land in the store with the next commit, a read sees every
// row appended before it, bad rows are refused before they can fail a commit, and the prune
// sweep deletes rows past load_history_retention.

#include "api/runtime.h"

#include <cmath>
#include <cstdint>
#include <future>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/store.h"
#include "util/clock.h"

namespace drover::api {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kEnd = std::numeric_limits<int64_t>::max();

store::LoadMinute Row(const std::string& pool, int64_t minute, int64_t arrivals) {
  store::LoadMinute row;
  row.pool = pool;
  row.minute = minute;
  row.arrivals = arrivals;
  return row;
}

class RuntimeLoadHistoryTest : public ::testing::Test {
 protected:
  void Start(PruneOptions prune = {}) {
    runtime_ = std::make_unique<Runtime>(engine_, *store_, 1000);
    runtime_->SetPruning(prune);
    runtime_->Start();
  }

  // Reads through the runtime and waits for the answer.
  Runtime::LoadRows Read(const std::string& pool, int64_t from, int64_t to, int64_t max_rows = 0) {
    std::promise<Runtime::LoadRows> promise;
    std::future<Runtime::LoadRows> answer = promise.get_future();
    EXPECT_TRUE(runtime_->ReadLoadHistory(
        pool, from, to, max_rows,
        [&promise](Runtime::LoadRows rows) { promise.set_value(std::move(rows)); }));
    return answer.get();
  }

  std::unique_ptr<store::Store> store_ = store::NewMemoryStore();
  SystemClock clock_;
  core::Engine engine_{core::EngineOptions(), clock_};
  std::unique_ptr<Runtime> runtime_;
};

TEST_F(RuntimeLoadHistoryTest, AppendedRowsAreCommittedAndReadBackInMinuteOrder) {
  Start();
  ASSERT_TRUE(runtime_->AppendLoadHistory({Row("web", 12, 3), Row("web", 10, 1)}).ok());
  ASSERT_TRUE(runtime_->AppendLoadHistory({Row("web", 11, 2), Row("batch", 11, 9)}).ok());
  // No wait in between: a read is ordered after every append made before it.
  Runtime::LoadRows rows = Read("web", 0, kEnd);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0].minute, 10);
  EXPECT_EQ((*rows)[1].minute, 11);
  EXPECT_EQ((*rows)[2].minute, 12);
  EXPECT_EQ((*rows)[2].arrivals, 3);
  rows = Read("web", 11, 12);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].arrivals, 2);
  rows = Read("web", 0, kEnd, 2);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->size(), 2u);
}

TEST_F(RuntimeLoadHistoryTest, DoneRunsOnceTheRowsAreCommitted) {
  Start();
  std::promise<absl::Status> committed;
  ASSERT_TRUE(runtime_
                  ->AppendLoadHistory({Row("web", 5, 1)},
                                      [&](const absl::Status& st) { committed.set_value(st); })
                  .ok());
  absl::Status st = committed.get_future().get();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(store_->Stats().load_rows_written, 1);  // already in the store when done runs
}

TEST_F(RuntimeLoadHistoryTest, ALaterRowOfTheSameMinuteReplacesTheEarlierOne) {
  Start();
  ASSERT_TRUE(runtime_->AppendLoadHistory({Row("web", 5, 1)}).ok());
  ASSERT_TRUE(runtime_->AppendLoadHistory({Row("web", 5, 7)}).ok());
  Runtime::LoadRows rows = Read("web", 0, kEnd);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].arrivals, 7);
}

TEST_F(RuntimeLoadHistoryTest, AppendsFromManyThreadsAllLand) {
  Start();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      for (int64_t m = 0; m < 250; ++m) {
        EXPECT_TRUE(runtime_->AppendLoadHistory({Row("p" + std::to_string(t), m, m)}).ok());
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < 4; ++t) {
    Runtime::LoadRows rows = Read("p" + std::to_string(t), 0, kEnd);
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_EQ(rows->size(), 250u);
  }
}

TEST_F(RuntimeLoadHistoryTest, ABadRowIsRefusedNamingTheFieldAndNothingIsQueued) {
  Start();
  store::LoadMinute bad = Row("web", 6, 1);
  bad.service_p95_s = std::nan("");
  bool ran = false;
  absl::Status st = runtime_->AppendLoadHistory({Row("web", 5, 1), bad},
                                                [&](const absl::Status&) { ran = true; });
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("service_p95_s"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("\"web\" minute 6"));
  Runtime::LoadRows rows = Read("web", 0, kEnd);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_TRUE(rows->empty());
  EXPECT_FALSE(ran);
}

TEST_F(RuntimeLoadHistoryTest, AfterStopAppendsAreRefusedAndQueuedRowsWereCommitted) {
  Start();
  ASSERT_TRUE(runtime_->AppendLoadHistory({Row("web", 1, 1), Row("web", 2, 2)}).ok());
  runtime_->Stop();
  EXPECT_EQ(store_->Stats().load_rows_written, 2);
  absl::Status st = runtime_->AppendLoadHistory({Row("web", 3, 1)});
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
}

TEST_F(RuntimeLoadHistoryTest, TheSweepPrunesRowsPastTheRetention) {
  PruneOptions prune;  // tasks kept forever: load history is pruned on its own
  prune.load_history_retention = absl::Hours(1);
  prune.sweep_interval = absl::Milliseconds(20);
  const int64_t now = absl::ToUnixSeconds(absl::Now()) / 60;
  Start(prune);
  EXPECT_EQ(runtime_->FirstKeptLoadMinute(absl::FromUnixSeconds(now * 60)), now - 60);
  ASSERT_TRUE(runtime_
                  ->AppendLoadHistory({Row("web", now - 120, 1), Row("web", now - 61, 1),
                                       Row("web", now - 30, 1), Row("web", now, 1)})
                  .ok());
  Runtime::LoadRows rows = Read("web", 0, kEnd);
  for (int i = 0; i < 200 && rows.ok() && rows->size() > 2; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    rows = Read("web", 0, kEnd);
  }
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].minute, now - 30);
  EXPECT_EQ(runtime_->stats().load_prune_failures, 0);
}

TEST_F(RuntimeLoadHistoryTest, AnInfiniteRetentionKeepsEverything) {
  Start();
  EXPECT_EQ(runtime_->FirstKeptLoadMinute(absl::Now()), 0);
}

}  // namespace
}  // namespace drover::api
