// What only the PostgreSQL driver and the lease can get wrong, on a real PostgreSQL 15
// (the "postgres" ctest fixture; see pg_test_db.h). The shared contract of every driver is
// in store_test.cc.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "cluster/lease.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pg_test_db.h"
#include "store/pg_conn.h"
#include "store/store.h"

namespace drover {
namespace {

using ::testing::HasSubstr;
using testing::NewPgSchema;
using testing::PgExec;
using testing::PgQuery;
using testing::PgSchema;

class PostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = NewPgSchema("pgt");
    if (!s) {
      if (testing::PgRequired()) FAIL() << "no test PostgreSQL, but the run requires one";
      GTEST_SKIP() << "no test PostgreSQL (DROVER_TEST_PG_URL unset)";
    }
    schema_ = *s;
  }
  std::unique_ptr<store::Store> Open(const std::string& extra = "") {
    auto st = store::OpenPostgresStore(schema_.url + extra);
    EXPECT_TRUE(st.ok()) << st.status();
    return st.ok() ? std::move(*st) : nullptr;
  }
  // A query on the test's schema.
  std::string Q(const std::string& sql) { return PgQuery(schema_.url, sql); }

  PgSchema schema_;
};

store::TaskRow Row(uint64_t id, int state, int64_t updated_ms) {
  store::TaskRow r;
  r.id = id;
  r.tenant = "t";
  r.type = "x";
  r.state = state;
  r.priority = 2;
  r.updated_unix_ms = updated_ms;
  r.blob = "blob-" + std::to_string(id) + "-" + std::to_string(state);
  return r;
}

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

TEST_F(PostgresTest, FinishedTasksLeaveTheHotTableForTheirDaysTable) {
  auto s = Open();
  ASSERT_NE(s, nullptr);
  const int64_t now = NowMs();
  store::WriteBatch b;
  b.upserts = {Row(1, 2, now), Row(2, 2, now), Row(3, 6, now)};
  ASSERT_TRUE(s->Commit(b).ok());
  b.upserts = {Row(1, 5, now + 1), Row(2, 7, now + 1)};
  ASSERT_TRUE(s->Commit(b).ok());
  EXPECT_EQ(Q("SELECT string_agg(id::text, ',' ORDER BY id) FROM tasks"), "3");  // DEAD stays
  const std::string day = Q("SELECT DISTINCT tableoid::regclass::text FROM task_history");
  EXPECT_THAT(day, ::testing::StartsWith("task_history_d"));
  auto got = s->GetTask(1);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->state, 5);
  EXPECT_EQ((*got)->blob, "blob-1-5");
  std::vector<uint64_t> ids;
  ASSERT_TRUE(s->LoadTasks([&](store::TaskRow&& r) { ids.push_back(r.id); }).ok());
  EXPECT_EQ(ids, (std::vector<uint64_t>{1, 2, 3}));
}

TEST_F(PostgresTest, ATaskBackFromAFinishedStateReadsAsItsNewestRow) {
  auto s = Open();
  ASSERT_NE(s, nullptr);
  const int64_t now = NowMs();
  store::WriteBatch b;
  b.upserts = {Row(7, 5, now)};
  ASSERT_TRUE(s->Commit(b).ok());
  b.upserts = {Row(7, 2, now + 5)};
  ASSERT_TRUE(s->Commit(b).ok());
  auto got = s->GetTask(7);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->state, 2);
  std::vector<store::TaskRow> rows;
  ASSERT_TRUE(s->LoadTasks([&](store::TaskRow&& r) { rows.push_back(std::move(r)); }).ok());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].state, 2);
}

TEST_F(PostgresTest, ABatchCommittedTwiceLeavesTheSameRows) {
  // After a lost connection the runtime sends the same batch again (runtime.cc).
  auto s = Open();
  ASSERT_NE(s, nullptr);
  const int64_t now = NowMs();
  store::WriteBatch b;
  b.upserts = {Row(1, 2, now), Row(2, 5, now), Row(3, 8, now)};
  b.meta = {{"max_task_id", "3"}};
  ASSERT_TRUE(s->Commit(b).ok());
  ASSERT_TRUE(s->Commit(b).ok());
  EXPECT_EQ(Q("SELECT count(*) FROM task_history"), "2");
  EXPECT_EQ(Q("SELECT count(*) FROM tasks"), "1");
}

TEST_F(PostgresTest, RetentionDropsWholeDaysAndKeepsTheComingOnes) {
  auto s = Open();
  ASSERT_NE(s, nullptr);
  const int64_t day = 86'400'000;
  const int64_t today = NowMs() / day * day;
  store::WriteBatch b;
  for (uint64_t id = 1; id <= 50; ++id) b.upserts.push_back(Row(id, 5, today + 1000));
  ASSERT_TRUE(s->Commit(b).ok());
  const std::string tables =
      "SELECT count(*) FROM pg_inherits WHERE inhparent = 'task_history'::regclass";
  EXPECT_EQ(Q(tables), "5");  // the default table, today and the three days after
  // A cutoff inside today keeps today's table.
  auto none = s->DropFinishedBefore(today + day / 2, today + day / 2);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(Q("SELECT count(*) FROM task_history"), "50");
  // Once today is wholly past the cutoff, its table goes in one DROP; tomorrow's is made.
  auto dropped = s->DropFinishedBefore(today + day, today + day + 1);
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(Q("SELECT count(*) FROM task_history"), "0");
  EXPECT_EQ(Q(tables), "5");  // today's dropped, a fourth day ahead created
  auto got = s->GetTask(1);
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
}

TEST_F(PostgresTest, ServersStartingTogetherMigrateOnce) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      auto st = store::OpenPostgresStore(schema_.url);
      if (st.ok()) ok++;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 4);
  EXPECT_EQ(Q("SELECT count(*) FROM drover_schema"), "1");
  EXPECT_EQ(Q("SELECT version FROM drover_schema"), "5");  // the newest migration
}

TEST_F(PostgresTest, ASchemaFromANewerDroverIsRefused) {
  ASSERT_NE(Open(), nullptr);
  ASSERT_EQ(PgExec(schema_.url, "UPDATE drover_schema SET version = 99"), "");
  auto st = store::OpenPostgresStore(schema_.url);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(st.status().message()), HasSubstr("version 99"));
}

// A loopback port nothing listens on, and one that accepts connections but never answers.
int ClosedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t n = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST(PostgresUnreachableTest, ARefusedConnectionIsUnavailableAtOnce) {
  const absl::Time start = absl::Now();
  auto st = store::OpenPostgresStore(
      "postgresql://postgres@127.0.0.1:" + std::to_string(ClosedPort()) + "/drover");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().code(), absl::StatusCode::kUnavailable) << st.status();
  EXPECT_THAT(std::string(st.status().message()), HasSubstr("cannot connect"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(PostgresUnreachableTest, AServerThatNeverAnswersIsUnavailableWithinTheTimeout) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 8), 0);  // the kernel completes handshakes; nobody ever reads
  socklen_t n = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  store::PostgresOptions o;
  o.connect_timeout = absl::Seconds(2);
  const absl::Time start = absl::Now();
  auto st = store::OpenPostgresStore(
      "postgresql://postgres@127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/drover", o);
  const absl::Duration took = absl::Now() - start;
  ::close(fd);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().code(), absl::StatusCode::kUnavailable) << st.status();
  EXPECT_GE(took, absl::Seconds(1));
  EXPECT_LT(took, absl::Seconds(6));
}

TEST_F(PostgresTest, AConnectionKilledByTheServerFailsOnceThenReconnects) {
  auto s = Open("&application_name=" + schema_.name);
  ASSERT_NE(s, nullptr);
  store::WriteBatch b;
  b.upserts = {Row(1, 2, NowMs())};
  ASSERT_TRUE(s->Commit(b).ok());
  ASSERT_EQ(PgQuery(*testing::PgServerUrl(),
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                    "application_name = '" +
                        schema_.name + "'"),
            "1");
  b.upserts = {Row(2, 2, NowMs())};
  absl::Status first = s->Commit(b);
  EXPECT_EQ(first.code(), absl::StatusCode::kUnavailable) << first;
  absl::Status again = s->Commit(b);  // what the runtime does: the same batch again
  EXPECT_TRUE(again.ok()) << again;
  EXPECT_EQ(Q("SELECT count(*) FROM tasks"), "2");
}

TEST_F(PostgresTest, FencedWritesFailOnceTheLeaseMovesAndWriteNothing) {
  auto s = Open();
  ASSERT_NE(s, nullptr);
  ASSERT_EQ(PgExec(schema_.url,
                   "INSERT INTO leases VALUES ('partition/0', 'me', 3, now() + interval '1 h', "
                   "now(), '')"),
            "");
  ASSERT_TRUE(s->SetFence({"partition/0", "me", 3}).ok());
  store::WriteBatch b;
  b.upserts = {Row(1, 2, NowMs())};
  ASSERT_TRUE(s->Commit(b).ok());
  ASSERT_EQ(PgExec(schema_.url, "UPDATE leases SET owner = 'other', epoch = 4"), "");
  b.upserts = {Row(2, 2, NowMs())};
  b.meta = {{"k", "v"}};
  absl::Status st = s->Commit(b);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("fenced"));
  EXPECT_EQ(Q("SELECT count(*) FROM tasks"), "1");
  EXPECT_EQ(Q("SELECT count(*) FROM meta"), "0");
  // A prune is a write too.
  auto pr = s->PruneRows(
      {.from_id = 0, .max_scan = 10, .states = {2}, .updated_before_unix_ms = NowMs() + 1000});
  EXPECT_FALSE(pr.ok());
  EXPECT_EQ(Q("SELECT count(*) FROM tasks"), "1");
}

// ---- leases -------------------------------------------------------------------------------

TEST_F(PostgresTest, AConnectionUsedByTwoThreadsAtOnceRefusesTheSecond) {
  auto c = store::pg::Conn::Connect(schema_.url, absl::Seconds(5));
  ASSERT_TRUE(c.ok()) << c.status();
  store::pg::Conn& conn = **c;
  std::atomic<bool> inside{false}, other_done{false};
  absl::Status other;
  std::thread t([&] {
    while (!inside.load()) std::this_thread::yield();
    auto r = conn.Query({"SELECT 1", {}, false}, absl::Now() + absl::Seconds(5));
    other = r.status();
    other_done.store(true);
  });
  int rows = 0;
  absl::Status st = conn.Stream({"SELECT generate_series(1, 3)", {}, false},
                                absl::Now() + absl::Seconds(5), [&](const store::pg::Result&) {
                                  inside.store(true);
                                  while (!other_done.load()) std::this_thread::yield();
                                  ++rows;
                                  return true;
                                });
  t.join();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(rows, 3);
  EXPECT_TRUE(absl::IsInternal(other)) << other;
  EXPECT_THAT(std::string(other.message()), HasSubstr("two threads at once"));
  // Free again afterwards, for any thread.
  std::thread later([&] {
    auto r = conn.Query({"SELECT 1", {}, false}, absl::Now() + absl::Seconds(5));
    EXPECT_TRUE(r.ok()) << r.status();
  });
  later.join();
}

class LeaseTest : public PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_NE(Open(), nullptr);  // the schema (leases, drover_fence)
  }
  cluster::LeaseOptions Options(const std::string& owner, absl::Duration ttl) {
    cluster::LeaseOptions o;
    o.url = schema_.url;
    o.name = "partition/0";
    o.owner = owner;
    o.ttl = ttl;
    o.margin = ttl / 6;
    o.poll = absl::Milliseconds(50);
    return o;
  }
};

TEST_F(LeaseTest, OneHolderAtATimeAndAReleaseHandsOverAtOnce) {
  cluster::Lease a(Options("a", absl::Seconds(30)));
  auto ea = a.Acquire(nullptr, nullptr);
  ASSERT_TRUE(ea.ok()) << ea.status();
  EXPECT_EQ(*ea, 1);
  EXPECT_TRUE(a.valid());
  cluster::Lease b(Options("b", absl::Seconds(30)));
  const absl::Time until = absl::Now() + absl::Milliseconds(600);
  auto eb = b.Acquire(nullptr, [&] { return absl::Now() > until; });
  EXPECT_EQ(eb.status().code(), absl::StatusCode::kCancelled);
  ASSERT_TRUE(a.Release().ok());
  EXPECT_FALSE(a.valid());
  const absl::Time start = absl::Now();
  eb = b.Acquire(nullptr, nullptr);
  ASSERT_TRUE(eb.ok()) << eb.status();
  EXPECT_EQ(*eb, 2);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
}

TEST_F(LeaseTest, AnUnrenewedLeaseIsTakenOverAfterItsTtlAndItsHolderStopsFirst) {
  const absl::Duration ttl = absl::Milliseconds(1500);
  cluster::Lease a(Options("a", ttl));
  ASSERT_TRUE(a.Acquire(nullptr, nullptr).ok());
  // a never renews (no Run): it must stop acting while the database still says it holds.
  while (a.valid()) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ(Q("SELECT expires_at > now() FROM leases"), "t");
  cluster::Lease b(Options("b", ttl));
  auto eb = b.Acquire(nullptr, nullptr);
  ASSERT_TRUE(eb.ok());
  EXPECT_EQ(*eb, 2);
  EXPECT_EQ(Q("SELECT owner FROM leases"), "b");
}

TEST_F(LeaseTest, RenewalsKeepTheLeaseAndATakeoverIsNoticed) {
  const absl::Duration ttl = absl::Milliseconds(1500);
  cluster::Lease a(Options("a", ttl));
  ASSERT_TRUE(a.Acquire(nullptr, nullptr).ok());
  std::atomic<bool> lost{false};
  std::string why;
  a.Run([&](const std::string& w) {
    why = w;
    lost = true;
  });
  absl::SleepFor(ttl * 2);  // several renewals
  EXPECT_TRUE(a.valid());
  EXPECT_FALSE(lost.load());
  // Someone else takes the row (as after a pause past the TTL).
  ASSERT_EQ(PgExec(schema_.url, "UPDATE leases SET owner = 'b', epoch = epoch + 1"), "");
  const absl::Time deadline = absl::Now() + ttl;
  while (!lost.load() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_TRUE(lost.load());
  EXPECT_FALSE(a.valid());
  EXPECT_THAT(why, HasSubstr("taken over"));
}

TEST_F(LeaseTest, ListShowsTheHolderEpochAndAddress) {
  auto o = Options("a", absl::Seconds(10));
  o.address = "127.0.0.1:7070";
  cluster::Lease a(o);
  ASSERT_TRUE(a.Acquire(nullptr, nullptr).ok());
  auto rows = cluster::Lease::List(schema_.url);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].owner, "a");
  EXPECT_EQ((*rows)[0].address, "127.0.0.1:7070");
  EXPECT_EQ((*rows)[0].epoch, 1);
  EXPECT_GT((*rows)[0].expires_in, absl::Seconds(5));
}

}  // namespace
}  // namespace drover
