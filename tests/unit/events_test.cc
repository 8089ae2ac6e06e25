// The event log (docs/events.md): the store drivers' part (conformance over every driver),
// the hub that answers followers and long polls, and what the engine logs.

#include "obs/events.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/engine.h"
#include "engine_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "obs/series.h"
#include "store/store.h"
#include "store_fixture.h"

namespace drover {
namespace {

using ::testing::ElementsAre;

// --- store ---------------------------------------------------------------------------------

using store::EventQuery;
using store::EventRow;
using store::test_support::StoreFixture;

EventRow Row(int64_t seq, int64_t ms, std::string type, std::string tenant = "", uint64_t task = 0,
             std::string pool = "", uint64_t workflow = 0) {
  EventRow r;
  r.seq = seq;
  r.unix_ms = ms;
  r.type = std::move(type);
  r.tenant = std::move(tenant);
  r.task_id = task;
  r.workflow_id = workflow;
  r.pool = std::move(pool);
  r.blob = "blob" + std::to_string(seq);
  return r;
}

class EventStore : public StoreFixture {
 protected:
  std::vector<int64_t> Seqs(EventQuery q) {
    std::vector<int64_t> out;
    absl::Status st = store_->ReadEvents(q, [&](EventRow&& r) {
      EXPECT_EQ(r.blob, "blob" + std::to_string(r.seq));
      out.push_back(r.seq);
    });
    EXPECT_TRUE(st.ok()) << st;
    return out;
  }
  void Fill() {
    store::WriteBatch b;
    b.events = {
        Row(1, 1000, "task.ready", "a", 7),        Row(2, 2000, "agent.registered", "", 0, "gpu"),
        Row(3, 3000, "task.dead", "a", 7),         Row(4, 4000, "task.dead", "b", 8, "", 5),
        Row(5, 5000, "pool.scaled", "", 0, "gpu"), Row(6, 6000, "admission.refused", "b")};
    Commit(b);
  }
};

TEST_P(EventStore, AnEmptyLogHasMaxSeqZeroAndReadsNothing) {
  auto max = store_->MaxEventSeq();
  ASSERT_TRUE(max.ok()) << max.status();
  EXPECT_EQ(*max, 0);
  EXPECT_TRUE(Seqs(EventQuery{}).empty());
}

TEST_P(EventStore, EventsReadBackInSeqOrderWithEveryColumn) {
  Fill();
  EXPECT_THAT(Seqs(EventQuery{}), ElementsAre(1, 2, 3, 4, 5, 6));
  std::vector<EventRow> rows;
  EventQuery q;
  q.after_seq = 3;
  q.limit = 1;
  ASSERT_TRUE(store_->ReadEvents(q, [&](EventRow&& r) { rows.push_back(std::move(r)); }).ok());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].seq, 4);
  EXPECT_EQ(rows[0].unix_ms, 4000);
  EXPECT_EQ(rows[0].type, "task.dead");
  EXPECT_EQ(rows[0].tenant, "b");
  EXPECT_EQ(rows[0].task_id, 8u);
  EXPECT_EQ(rows[0].workflow_id, 5u);
  EXPECT_EQ(*store_->MaxEventSeq(), 6);
}

TEST_P(EventStore, FiltersCombineAndTypesMatchWholeTypesOrTheirSubject) {
  Fill();
  EventQuery q;
  q.types = {"task"};
  EXPECT_THAT(Seqs(q), ElementsAre(1, 3, 4));
  q.types = {"task.dead", "pool"};
  EXPECT_THAT(Seqs(q), ElementsAre(3, 4, 5));
  q.types = {"tas"};  // not a subject: no prefix match inside a word
  EXPECT_TRUE(Seqs(q).empty());
  q = EventQuery{};
  q.task_id = 7;
  EXPECT_THAT(Seqs(q), ElementsAre(1, 3));
  q.types = {"task.dead"};
  EXPECT_THAT(Seqs(q), ElementsAre(3));
  q = EventQuery{};
  q.pool = "gpu";
  EXPECT_THAT(Seqs(q), ElementsAre(2, 5));
  q = EventQuery{};
  q.workflow_id = 5;
  EXPECT_THAT(Seqs(q), ElementsAre(4));
  q = EventQuery{};
  q.tenant = "b";  // events of no tenant are not a tenant's
  EXPECT_THAT(Seqs(q), ElementsAre(4, 6));
  q = EventQuery{};
  q.since_unix_ms = 3500;
  EXPECT_THAT(Seqs(q), ElementsAre(4, 5, 6));
  q.after_seq = 5;
  EXPECT_THAT(Seqs(q), ElementsAre(6));
  q = EventQuery{};
  q.since_unix_ms = 9000;
  EXPECT_TRUE(Seqs(q).empty());
  q = EventQuery{};
  q.limit = 2;
  q.after_seq = 1;
  EXPECT_THAT(Seqs(q), ElementsAre(2, 3));
}

TEST_P(EventStore, ASeqCommittedTwiceKeepsTheFirstAndDoesNotFail) {
  Fill();
  store::WriteBatch again;
  again.events = {Row(6, 6000, "admission.refused", "b"), Row(7, 7000, "task.ready", "a", 9)};
  Commit(again);  // a retried commit: 6 is there already
  EXPECT_THAT(Seqs(EventQuery{}), ElementsAre(1, 2, 3, 4, 5, 6, 7));
}

TEST_P(EventStore, SeqsOutOfOrderRejectTheWholeBatch) {
  store::WriteBatch b;
  b.events = {Row(2, 1, "task.ready"), Row(2, 1, "task.ready")};
  absl::Status st = store_->Commit(b);
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("event seq 2"));
  EXPECT_TRUE(Seqs(EventQuery{}).empty());
}

TEST_P(EventStore, PruneDeletesOlderEventsOnly) {
  Fill();
  auto n = store_->PruneEvents(3000);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2);
  EXPECT_THAT(Seqs(EventQuery{}), ElementsAre(3, 4, 5, 6));
  EXPECT_EQ(*store_->MaxEventSeq(), 6);
  EXPECT_EQ(store_->Stats().event_rows_pruned, 2);
  EXPECT_EQ(store_->Stats().event_rows_written, 6);
}

TEST_P(EventStore, SinceAndPruneFindTheirPlaceAmongManyByTime) {
  store::WriteBatch b;
  for (int64_t s = 1; s <= 1000; ++s) b.events.push_back(Row(s, s * 10, "task.ready", "a", s));
  Commit(b);
  EventQuery q;
  q.since_unix_ms = 5005;
  q.limit = 2;
  EXPECT_THAT(Seqs(q), ElementsAre(501, 502));
  q.since_unix_ms = 10;
  EXPECT_THAT(Seqs(q), ElementsAre(1, 2));
  q.since_unix_ms = 10'001;
  EXPECT_TRUE(Seqs(q).empty());
  auto n = store_->PruneEvents(3000);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 299);  // seqs 1 to 299 (at 10 to 2990 ms)
  q = EventQuery{};
  q.limit = 1;
  EXPECT_THAT(Seqs(q), ElementsAre(300));
  // Everything older: all go but the newest, which keeps the log's last seq.
  n = store_->PruneEvents(1'000'000);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 700);
  EXPECT_THAT(Seqs(EventQuery{}), ElementsAre(1000));
  EXPECT_EQ(*store_->MaxEventSeq(), 1000);
}

TEST_P(EventStore, AZeroLimitIsRefused) {
  EventQuery q;
  q.limit = 0;
  absl::Status st = store_->ReadEvents(q, [](EventRow&&) {});
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
}

INSTANTIATE_TEST_SUITE_P(Drivers, EventStore, ::testing::ValuesIn(store::test_support::kDrivers),
                         [](const auto& info) { return info.param.name; });

// --- hub ------------------------------------------------------------------------------------

v1::Event Ev(int64_t seq, const std::string& type, uint64_t task = 0, int64_t ms = 0) {
  v1::Event e;
  e.set_seq(seq);
  e.set_unix_ms(ms == 0 ? seq * 1000 : ms);
  e.set_type(type);
  e.set_task_id(task);
  return e;
}

std::vector<int64_t> SeqsOf(const obs::EventHub::Page& p) {
  std::vector<int64_t> out;
  for (const v1::Event& e : p.events) out.push_back(e.seq());
  return out;
}

// A waiter's answer, waited for on the test thread.
struct Answer {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<obs::EventHub::Page> page;
  obs::EventHub::WaitFn Fn() {
    return [this](obs::EventHub::Page p) {
      std::lock_guard<std::mutex> lk(mu);
      page = std::move(p);
      cv.notify_all();
    };
  }
  bool Await(absl::Duration d) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, absl::ToChronoMilliseconds(d), [&] { return page.has_value(); });
  }
};

TEST(EventHub, AnswersFromTheRingAndSaysWhenItCannot) {
  obs::EventHub hub(4);
  hub.Reset(10, 10'000);  // 1..10 are in the store only
  hub.Publish({Ev(11, "task.ready", 1), Ev(12, "task.dead", 1), Ev(13, "agent.removed")});
  EventQuery q;
  q.after_seq = 10;
  auto page = hub.Query(q);
  ASSERT_TRUE(page.has_value());
  EXPECT_THAT(SeqsOf(*page), ElementsAre(11, 12, 13));
  EXPECT_EQ(page->next_after, 13);
  EXPECT_FALSE(page->more);
  q.after_seq = 9;  // wants event 10, which only the store has
  EXPECT_FALSE(hub.Query(q).has_value());
  q.after_seq = 10;
  q.types = {"task"};
  q.limit = 1;
  page = hub.Query(q);
  ASSERT_TRUE(page.has_value());
  EXPECT_THAT(SeqsOf(*page), ElementsAre(11));
  EXPECT_TRUE(page->more);
  EXPECT_EQ(page->next_after, 11);
  // Two more push 11 out of a ring of 4.
  hub.Publish({Ev(14, "task.ready", 2), Ev(15, "task.ready", 3)});
  q = EventQuery{};
  q.after_seq = 10;
  EXPECT_FALSE(hub.Query(q).has_value());
  q.after_seq = 11;
  ASSERT_TRUE(hub.Query(q).has_value());
  EXPECT_THAT(SeqsOf(*hub.Query(q)), ElementsAre(12, 13, 14, 15));
  // By time: every event since 12 s is still held, not every one since 11 s.
  q = EventQuery{};
  q.since_unix_ms = 12'000;
  ASSERT_TRUE(hub.Query(q).has_value());
  EXPECT_THAT(SeqsOf(*hub.Query(q)), ElementsAre(12, 13, 14, 15));
  q.since_unix_ms = 11'000;
  EXPECT_FALSE(hub.Query(q).has_value());
}

TEST(EventHub, AWaiterGetsTheFirstMatchingEventsAndOnlyThose) {
  obs::EventHub hub;
  hub.Reset(0, 0);
  Answer a;
  EventQuery q;
  q.task_id = 5;
  ASSERT_TRUE(hub.Wait(q, absl::Now() + absl::Seconds(30), a.Fn()).ok());
  EXPECT_EQ(hub.waiters(), 1u);
  hub.Publish({Ev(1, "task.ready", 4)});
  EXPECT_FALSE(a.Await(absl::Milliseconds(50)));
  hub.Publish({Ev(2, "task.ready", 5), Ev(3, "task.leased", 6), Ev(4, "task.dead", 5)});
  ASSERT_TRUE(a.Await(absl::Seconds(5)));
  EXPECT_THAT(SeqsOf(*a.page), ElementsAre(2, 4));
  EXPECT_EQ(a.page->next_after, 4);
  EXPECT_EQ(hub.waiters(), 0u);
}

TEST(EventHub, EventsPublishedBeforeTheWaitAnswerItAtOnce) {
  obs::EventHub hub;
  hub.Reset(0, 0);
  hub.Publish({Ev(1, "task.ready", 1), Ev(2, "task.dead", 1)});
  Answer a;
  EventQuery q;
  q.after_seq = 1;  // the caller saw 1 and nothing since
  ASSERT_TRUE(hub.Wait(q, absl::Now() + absl::Seconds(30), a.Fn()).ok());
  ASSERT_TRUE(a.Await(absl::Seconds(1)));
  EXPECT_THAT(SeqsOf(*a.page), ElementsAre(2));
}

TEST(EventHub, AWaitEndsEmptyAtItsDeadlineWithTheTokenMovedOn) {
  obs::EventHub hub;
  hub.Reset(0, 0);
  Answer a;
  EventQuery q;
  q.types = {"pool"};
  ASSERT_TRUE(hub.Wait(q, absl::Now() + absl::Milliseconds(200), a.Fn()).ok());
  hub.Publish({Ev(1, "task.ready", 1), Ev(2, "task.ready", 2)});
  ASSERT_TRUE(a.Await(absl::Seconds(10)));
  EXPECT_TRUE(a.page->events.empty());
  EXPECT_EQ(a.page->next_after, 2);  // looked through 1 and 2
}

TEST(EventHub, ShutdownAnswersWaitersAndRefusesNewOnes) {
  obs::EventHub hub;
  hub.Reset(0, 0);
  Answer a;
  ASSERT_TRUE(hub.Wait(EventQuery{}, absl::Now() + absl::Hours(1), a.Fn()).ok());
  hub.Shutdown();
  ASSERT_TRUE(a.Await(absl::Seconds(1)));
  EXPECT_TRUE(a.page->events.empty());
  Answer b;
  EXPECT_TRUE(absl::IsUnavailable(hub.Wait(EventQuery{}, absl::Now() + absl::Hours(1), b.Fn())));
}

TEST(EventHub, WaitersBeyondTheLimitAreRefused) {
  obs::EventHub hub(16, 2);
  hub.Reset(0, 0);
  Answer a, b, c;
  const absl::Time later = absl::Now() + absl::Hours(1);
  ASSERT_TRUE(hub.Wait(EventQuery{}, later, a.Fn()).ok());
  ASSERT_TRUE(hub.Wait(EventQuery{}, later, b.Fn()).ok());
  absl::Status st = hub.Wait(EventQuery{}, later, c.Fn());
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
  hub.Publish({Ev(1, "task.ready", 1)});
  ASSERT_TRUE(a.Await(absl::Seconds(1)));
  ASSERT_TRUE(b.Await(absl::Seconds(1)));
}

// --- engine ---------------------------------------------------------------------------------

class EngineEvents : public core::testing_internal::EngineTest {
 protected:
  void Level(core::TaskEvents level) {
    core::EngineOptions o = BaseOptions();
    o.task_events = level;
    Reset(o);
  }
  std::vector<std::string> Types(uint64_t task = 0) const {
    std::vector<std::string> out;
    for (const v1::Event& e : events_) {
      if (task == 0 || e.task_id() == task) out.push_back(e.type());
    }
    return out;
  }
  const v1::Event* Last(const std::string& type) const {
    for (auto it = events_.rbegin(); it != events_.rend(); ++it) {
      if (it->type() == type) return &*it;
    }
    return nullptr;
  }
};

TEST_F(EngineEvents, AllLogsEveryChangeOfATask) {
  Level(core::TaskEvents::kAll);
  const core::AgentId agent = StartAgent("build");
  const core::TaskId id = Submit("build");
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  EXPECT_THAT(Types(id), ElementsAre("task.ready", "task.leased", "task.succeeded"));
  const v1::Event* leased = Last("task.leased");
  ASSERT_NE(leased, nullptr);
  EXPECT_EQ(leased->agent_id(), agent);
  EXPECT_EQ(leased->tenant(), "default");
  EXPECT_EQ(leased->attrs().at("from"), "ready");
  EXPECT_EQ(leased->attrs().at("type"), "build");
  EXPECT_GT(leased->unix_ms(), 0);
}

TEST_F(EngineEvents, NotableLogsRetriesAndDeadLettersWithTheirErrorButNotTheHappyPath) {
  Level(core::TaskEvents::kNotable);
  const core::AgentId agent = StartAgent("build");
  const core::TaskId ok = Submit("build");
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  EXPECT_TRUE(Types(ok).empty());
  const core::TaskId bad = Submit("build");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "disk full #" + std::to_string(i)).ok());
    Advance(absl::Seconds(2));
  }
  EXPECT_THAT(Types(bad), ElementsAre("task.retry_wait", "task.retry_wait", "task.dead"));
  const v1::Event* retry = nullptr;
  for (const v1::Event& e : events_) {
    if (e.type() == "task.retry_wait") {
      retry = &e;
      break;
    }
  }
  ASSERT_NE(retry, nullptr);
  EXPECT_EQ(retry->message(), "failed: disk full #0");
  EXPECT_EQ(retry->agent_id(), agent);
  const v1::Event* dead = Last("task.dead");
  ASSERT_NE(dead, nullptr);
  EXPECT_THAT(dead->message(), ::testing::HasSubstr("disk full #2"));
  // Out of the dead-letter queue: logged as such.
  ASSERT_TRUE(engine_->Reprocess({bad}, false, "").ok());
  Settle();
  const v1::Event* back = Last("task.ready");
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(back->attrs().at("from"), "dead");
  EXPECT_EQ(back->message(), "reprocessed from the dead-letter queue");
}

TEST_F(EngineEvents, OffLogsNoTaskChangeButStillAgents) {
  Level(core::TaskEvents::kOff);
  const core::AgentId agent = StartAgent("build");
  Submit("build");
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "x", false).ok());
  EXPECT_THAT(Types(), ElementsAre("agent.registered"));
}

TEST_F(EngineEvents, ALostLeaseIsLoggedAsTheTaskGoesBackToTheQueue) {
  Level(core::TaskEvents::kNotable);
  const core::AgentId agent = StartAgent("build");
  const core::TaskId id = Submit("build");
  TakeOnlyLease(agent);
  AgentCrashes(agent);
  Advance(core::testing_internal::kTtl + absl::Seconds(1));
  ASSERT_FALSE(Types(id).empty());
  const v1::Event* removed = Last("agent.removed");
  ASSERT_NE(removed, nullptr);
  EXPECT_EQ(removed->agent_id(), agent);
  EXPECT_EQ(removed->attrs().at("tasks_returned"), "1");
  EXPECT_EQ(Types(id).front(), "task.retry_wait");
}

TEST_F(EngineEvents, BreakerTransitionsAreLoggedWithFromAndTo) {
  core::EngineOptions o = BaseOptions();
  o.breaker_failures = 2;
  o.breaker_open_for = absl::Seconds(10);
  Reset(o);
  const core::AgentId agent = StartAgent("build");
  Submit("build");
  Submit("build");
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "x").ok());
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "x").ok());
  const v1::Event* open = Last("agent.breaker");
  ASSERT_NE(open, nullptr);
  EXPECT_EQ(open->agent_id(), agent);
  EXPECT_EQ(open->attrs().at("from"), "closed");
  EXPECT_EQ(open->attrs().at("to"), "open");
}

TEST_F(EngineEvents, RefusalsAreCountedAndLoggedOnceASecondPerReasonAndTenant) {
  core::EngineOptions o = BaseOptions();
  o.tenant_quotas["capped"] = {0, 0, 1};
  Reset(o);
  v1::TaskSpec s = Spec("build");
  s.set_tenant("capped");
  ASSERT_TRUE(TrySubmit(s).ok());
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(TrySubmit(s).ok());
  EXPECT_EQ(Last("admission.refused"), nullptr) << "not before the window closes";
  Advance(absl::Seconds(1));
  const v1::Event* refused = Last("admission.refused");
  ASSERT_NE(refused, nullptr);
  EXPECT_EQ(refused->tenant(), "capped");
  EXPECT_EQ(refused->attrs().at("calls"), "5");
  EXPECT_EQ(refused->attrs().at("reason"), "tenant quota");
  EXPECT_THAT(refused->message(), ::testing::HasSubstr("5 calls (5 tasks) refused"));
  const size_t n = events_.size();
  Advance(absl::Seconds(5));
  EXPECT_EQ(events_.size(), n) << "nothing more to log";
}

// The gauge behind the alert on work waiting (drover_oldest_ready_task_age_seconds).
TEST_F(EngineEvents, TheOldestReadyTaskOfATypeIsTrackedThroughDispatchAndRetries) {
  Level(core::TaskEvents::kNotable);
  EXPECT_TRUE(engine_->OldestReadyAges().empty());
  const core::TaskId first = Submit("build");
  Advance(absl::Seconds(10));
  Submit("build");
  Submit("lint");
  Advance(absl::Seconds(5));
  auto ages = engine_->OldestReadyAges();
  EXPECT_EQ(ages["build"], absl::Seconds(15));
  EXPECT_EQ(ages["lint"], absl::Seconds(5));
  // The first is dispatched and fails: the second is now the oldest; the first, back after
  // its backoff, is ready again from then on.
  const core::AgentId agent = StartAgent("build");
  const v1::TaskLease lease = TakeOnlyLease(agent);
  EXPECT_EQ(lease.task_id(), first);
  EXPECT_EQ(engine_->OldestReadyAges()["build"], absl::Seconds(5));
  ASSERT_TRUE(Fail(agent, lease, "x").ok());
  TakeLeases(agent);
  Advance(absl::Seconds(1));  // past the backoff (at most 1 s): the timer fires at 1 s
  Advance(absl::Seconds(2));
  // The agent holds the second; the first is ready again since the end of its backoff.
  ASSERT_EQ(TaskOf(first).state(), v1::TASK_STATE_READY);
  EXPECT_EQ(engine_->OldestReadyAges()["build"], absl::Seconds(2));
  // Many tasks through a type whose oldest stays: the bookkeeping stays bounded.
  for (int i = 0; i < 5000; ++i) {
    Submit("lint");
  }
  const core::AgentId linter = StartAgent("lint", 1);
  for (int i = 0; i < 4000; ++i) {
    auto leases = TakeLeases(linter);
    ASSERT_EQ(leases.size(), 1u);
    ASSERT_TRUE(Complete(linter, leases[0]).ok());
  }
  Advance(absl::Seconds(1));
  EXPECT_EQ(engine_->OldestReadyAges()["lint"], absl::Seconds(1));
}

// The dashboard's stats series (obs/series.h).
TEST(StatsSeries, DeltaQuantileReadsOnlyTheObservationsBetweenSnapshots) {
  const std::vector<double> bounds = {0.001, 0.01, 0.1, 1};
  // 10 observations in (0.001, 0.01] before; 10 more in (0.1, 1] since.
  const std::vector<uint64_t> before = {0, 10, 0, 0, 0};
  const std::vector<uint64_t> now = {0, 10, 0, 10, 0};
  EXPECT_NEAR(obs::DeltaQuantile(bounds, now, before, 0.5), 0.1 + 0.9 * 0.5, 1e-9);
  EXPECT_NEAR(obs::DeltaQuantile(bounds, now, before, 1.0), 1.0, 1e-9);
  EXPECT_EQ(obs::DeltaQuantile(bounds, before, before, 0.5), 0) << "none since: 0";
  EXPECT_NEAR(obs::DeltaQuantile(bounds, now, {}, 0.25), 0.001 + 0.009 * 0.5, 1e-9);
  EXPECT_EQ(obs::DeltaQuantile(bounds, {0, 0, 0, 0, 3}, {}, 0.5), 1) << "+Inf: the largest bound";
}

TEST(StatsSeries, KeepsItsWindowAndAnswersTheLastOne) {
  obs::StatsSeries series(absl::Seconds(5), absl::Seconds(50));  // 10 samples
  const absl::Time t0 = absl::FromUnixSeconds(1'000'000);
  for (int i = 0; i < 15; ++i) {
    v1::StatsSample s;
    s.set_unix_ms(absl::ToUnixMillis(t0 + absl::Seconds(5 * i)));
    s.set_submitted_total(i);
    series.Add(s);
  }
  EXPECT_EQ(series.size(), 10u);
  const v1::StatsSeriesResponse r = series.Query(absl::Seconds(20), t0 + absl::Seconds(70));
  EXPECT_EQ(r.step_ms(), 5000);
  ASSERT_EQ(r.samples_size(), 5);  // 50, 55, 60, 65, 70 s
  EXPECT_EQ(r.samples(0).submitted_total(), 10);
  EXPECT_EQ(r.samples(4).submitted_total(), 14);
}

}  // namespace
}  // namespace drover
