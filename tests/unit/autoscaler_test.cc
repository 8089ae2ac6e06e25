// The reactive autoscaler against the Kubernetes HPA's rules (autoscaling/v2 defaults), on
// a manual clock. Every expected figure is worked out in the comment above it.
#include "scale/autoscaler.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace drover::scale {
namespace {

class AutoscalerTest : public ::testing::Test {
 protected:
  // HPA defaults; pending tasks per agent with a target of 10; bounds 1..100.
  static AutoscalerSpec Spec() {
    AutoscalerSpec s;
    s.target = 10;
    s.min = 1;
    s.max = 100;
    return s;
  }
  ScalingDecision At(Autoscaler& a, absl::Duration since_start, int current, int64_t pending,
                     int budget_cap = std::numeric_limits<int>::max()) {
    ScalingInputs in;
    in.current = current;
    in.pending = pending;
    in.budget_cap = budget_cap;
    return a.Evaluate(t0_ + since_start, in);
  }
  absl::Time t0_ = absl::FromUnixSeconds(1'700'000'000);
};

TEST_F(AutoscalerTest, NoChangeWithinTheTolerance) {
  Autoscaler a(Spec());
  // 4 agents, 43 pending: 10.75 per agent, ratio 1.075 <= 1.1: keep 4.
  ScalingDecision d = At(a, absl::ZeroDuration(), 4, 43);
  EXPECT_EQ(d.desired, 4);
  EXPECT_EQ(d.rule, "within tolerance");
  EXPECT_DOUBLE_EQ(d.metric, 10.75);
  // 45 pending: ratio 1.125 > 1.1: ceil(45 / 10) = 5.
  d = At(a, absl::Seconds(15), 4, 45);
  EXPECT_EQ(d.desired, 5);
  EXPECT_EQ(d.rule, "scale up");
  // 4 agents, 37 pending: ratio 0.925, within: keep.
  Autoscaler b(Spec());
  EXPECT_EQ(At(b, absl::ZeroDuration(), 4, 37).desired, 4);
}

TEST_F(AutoscalerTest, ScaleUpIsLimitedToTheLargerOfDoubleAndPlusFourPer15Seconds) {
  Autoscaler a(Spec());
  // 2 agents, 1,000 pending: proposal ceil(1000 / 10) = 100. Limit from the period's start
  // (2): max(ceil(2 x 2) = 4, 2 + 4 = 6) = 6.
  ScalingDecision d = At(a, absl::ZeroDuration(), 2, 1000);
  EXPECT_EQ(d.proposed, 100);
  EXPECT_EQ(d.desired, 6);
  EXPECT_EQ(d.rule, "scale-up limit");
  // 5 s later, same period: its start is still 2 (6 minus the 4 added), so the limit is 6.
  d = At(a, absl::Seconds(5), 6, 1000);
  EXPECT_EQ(d.desired, 6);
  // 15 s after the first step the period starts at 6: max(12, 10) = 12.
  d = At(a, absl::Seconds(15), 6, 1000);
  EXPECT_EQ(d.desired, 12);
  // Then max(24, 16) = 24.
  d = At(a, absl::Seconds(30), 12, 1000);
  EXPECT_EQ(d.desired, 24);
  // From 24 the +100 % policy allows 48; with max 30 the bound decides.
  AutoscalerSpec capped = Spec();
  capped.max = 30;
  Autoscaler c(capped);
  d = At(c, absl::ZeroDuration(), 24, 1000);
  EXPECT_EQ(d.desired, 30);
  EXPECT_EQ(d.rule, "max bounds");
}

TEST_F(AutoscalerTest, ScaleDownWaitsForTheHighestProposalOfTheLast300Seconds) {
  Autoscaler a(Spec());
  // t = 0: 10 agents, 100 pending: ratio 1, keep 10 (the window remembers 10).
  EXPECT_EQ(At(a, absl::ZeroDuration(), 10, 100).desired, 10);
  // From t = 15 s demand falls to 20 pending: proposal 2 every sync, but the window still
  // holds the 10 of t = 0 until t = 300 s (a recommendation counts while t > now - 300 s).
  for (int s = 15; s < 300; s += 15) {
    ScalingDecision d = At(a, absl::Seconds(s), 10, 20);
    ASSERT_EQ(d.proposed, 2) << "t = " << s;
    ASSERT_EQ(d.desired, 10) << "t = " << s;
    EXPECT_TRUE(absl::StartsWith(d.rule, "stabilization window")) << d.rule;
  }
  // t = 300 s: the 10 has left the window; every proposal since is 2. Scale-down limit:
  // 100 % per 15 s from 10 -> 0; min 1 < 2: 2.
  ScalingDecision d = At(a, absl::Seconds(300), 10, 20);
  EXPECT_EQ(d.desired, 2);
  EXPECT_EQ(d.rule, "scale down");
}

TEST_F(AutoscalerTest, ScaleDownRateLimitWithAPodsPolicy) {
  AutoscalerSpec s = Spec();
  s.down.stabilization = absl::ZeroDuration();
  s.down.policies = {{ScalingPolicy::Type::kPods, 2, absl::Seconds(60)}};
  Autoscaler a(s);
  // 10 agents, nothing pending: proposal ceil(0 / 10) = 0; limit 10 - 2 = 8.
  ScalingDecision d = At(a, absl::ZeroDuration(), 10, 0);
  EXPECT_EQ(d.desired, 8);
  EXPECT_EQ(d.rule, "scale-down limit");
  // 15 s later: 2 removed in the 60 s period, its start is 10: limit 8 again.
  EXPECT_EQ(At(a, absl::Seconds(15), 8, 0).desired, 8);
  // 60 s after the first: the period starts at 8: 6.
  EXPECT_EQ(At(a, absl::Seconds(60), 8, 0).desired, 6);
  // Down to the min bound: from 2 the limit is 0, min is 1.
  Autoscaler b(s);
  d = At(b, absl::ZeroDuration(), 2, 0);
  EXPECT_EQ(d.desired, 1);
  EXPECT_EQ(d.rule, "min bounds");
}

TEST_F(AutoscalerTest, OutsideTheBoundsTheBoundsDecide) {
  Autoscaler a(Spec());
  EXPECT_EQ(At(a, absl::ZeroDuration(), 0, 0).desired, 1);  // below min 1
  Autoscaler b(Spec());
  ScalingDecision d = At(b, absl::ZeroDuration(), 120, 5000);  // above max 100
  EXPECT_EQ(d.desired, 100);
}

TEST_F(AutoscalerTest, UtilisationTarget) {
  AutoscalerSpec s = Spec();
  s.metric = AutoscalerSpec::Metric::kUtilization;
  s.target = 0.5;
  Autoscaler a(s);
  // 4 agents, 10 of 16 slots busy: 0.625 / 0.5 = 1.25 -> ceil(1.25 x 4) = 5.
  ScalingInputs in;
  in.current = 4;
  in.busy_slots = 10;
  in.total_slots = 16;
  ScalingDecision d = a.Evaluate(t0_, in);
  EXPECT_DOUBLE_EQ(d.metric, 0.625);
  EXPECT_EQ(d.desired, 5);
  // 9 of 16 busy: 0.5625 / 0.5 = 1.125 > 1.1 -> ceil(4.5) = 5; 8 of 16: exactly the
  // target, keep 4.
  in.busy_slots = 8;
  Autoscaler b(s);
  EXPECT_EQ(b.Evaluate(t0_, in).desired, 4);
}

TEST_F(AutoscalerTest, APoolAtZeroIsActivatedByPendingWork) {
  AutoscalerSpec s = Spec();
  s.min = 0;
  s.target = 2;
  Autoscaler a(s);
  // Nothing pending: stays at 0.
  EXPECT_EQ(At(a, absl::ZeroDuration(), 0, 0).desired, 0);
  // 7 pending: proposal ceil(7 / 2) = 4; scale-up limit from 0: max(0, 0 + 4) = 4.
  ScalingDecision d = At(a, absl::Seconds(15), 0, 7);
  EXPECT_EQ(d.proposed, 4);
  EXPECT_EQ(d.desired, 4);
  // 40 pending: proposal 20, limit from 0 (the 4 were added in this period): 4.
  Autoscaler b(s);
  EXPECT_EQ(At(b, absl::ZeroDuration(), 0, 40).desired, 4);
}

TEST_F(AutoscalerTest, TheBudgetIsAHardCap) {
  Autoscaler a(Spec());
  // Proposal ceil(60 / 10) = 6, limit 6 from 2 -> 6; the budget pays for 3.
  ScalingDecision d = At(a, absl::ZeroDuration(), 2, 60, /*budget_cap=*/3);
  EXPECT_EQ(d.desired, 3);
  EXPECT_EQ(d.rule, "budget cap");
  // A pool above its budget (the price rose) is taken down to it at once.
  Autoscaler b(Spec());
  EXPECT_EQ(At(b, absl::ZeroDuration(), 8, 80, /*budget_cap=*/5).desired, 5);
}

TEST_F(AutoscalerTest, BadSpecsAreRefusedNamingTheField) {
  AutoscalerSpec s = Spec();
  s.max = 0;
  EXPECT_TRUE(absl::StartsWith(ValidateAutoscalerSpec(s).message(), "max: must be >= min"));
  s = Spec();
  s.metric = AutoscalerSpec::Metric::kUtilization;
  s.target = 80;
  EXPECT_TRUE(absl::StartsWith(ValidateAutoscalerSpec(s).message(), "target: a utilisation"));
  s = Spec();
  s.up.policies[1].value = 0;
  EXPECT_TRUE(absl::StartsWith(ValidateAutoscalerSpec(s).message(), "scale_up.policies[1].value"));
  EXPECT_TRUE(ValidateAutoscalerSpec(Spec()).ok());
}

}  // namespace
}  // namespace drover::scale
