// loadtest: the report directory — report.md, summary.csv, and per scenario timeline.csv,
// latency.csv, throughput.svg and latency.svg.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "fmt/core.h"
#include "loadtest/internal.h"
#include "util/svg_chart.h"

namespace drover::loadtest {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string Ms(const Histogram& h, double q) {
  return h.count() == 0 ? "-" : fmt::format("{:.2f}", h.Quantile(q) * 1000);
}

std::string Percent(int64_t part, int64_t whole) {
  return whole == 0 ? "-"
                    : fmt::format("{:.2f} %",
                                  100.0 * static_cast<double>(part) / static_cast<double>(whole));
}

absl::Status Write(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("writing ", path, " failed"));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteReport(const Options& o, const std::string& server_desc,
                         const std::vector<ScenarioReport>& reports) {
  std::string md = fmt::format(
      "# drover loadtest\n\n{} UTC. Server: {}. Agents: {}.\n\n",
      absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::Now(), absl::UTCTimeZone()), server_desc,
      o.agent_command.empty() ? "built into loadtest" : "`drover agent` processes");
  md +=
      "Arrivals are open loop: each task is due at a fixed time whatever happened before, and "
      "latencies count from that time, so a slow answer cannot hide the wait behind it. "
      "*Lost* counts acknowledged tasks the server no longer knows or that did not end within "
      "the drain time; it must be 0.\n\n";
  md +=
      "## Summary\n\n| scenario | rate | acknowledged | succeeded | success | retries | dead "
      "letters | lost | "
      "submission p99 | end-to-end p50 | end-to-end p99 | throughput "
      "|\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  std::string summary =
      "scenario,rate_per_s,duration_s,acknowledged,refused,succeeded,dead,canceled,expired,"
      "unfinished,"
      "missing,lost,retries,submit_p50_ms,submit_p99_ms,e2e_p50_ms,e2e_p99_ms,e2e_p999_ms,"
      "workflow_p99_ms,fast_tasks,fast_secs,fast_tasks_per_s\n";
  for (const ScenarioReport& r : reports) {
    const Recorder& rec = *r.rec;
    const Histogram sub = rec.SubmitLatency(false), e2e = rec.TaskLatency(false),
                    wf = rec.WorkflowLatency();
    const int64_t lost = r.missing + r.unfinished;
    const double fast = r.max_secs > 0 ? static_cast<double>(rec.max_acked()) / r.max_secs : 0;
    const std::string tp =
        r.max_secs > 0
            ? fmt::format("{:.0f} tasks/s (fast phase)", fast)
            : fmt::format("{:.0f} tasks/s", static_cast<double>(r.succeeded) /
                                                std::max(1.0, r.open_loop_secs + r.drain_secs));
    md += fmt::format(
        "| [{0}](#{0}) | {1:.0f}/s | {2} | {3} | {4} | {5} | {6} | **{7}** | {8} ms | {9} ms | "
        "{10} ms | {11} |\n",
        ScenarioName(r.scenario), r.rate, rec.acked(), r.succeeded,
        Percent(r.succeeded, rec.acked()), rec.retries(), r.dead, lost, Ms(sub, 0.99), Ms(e2e, 0.5),
        Ms(e2e, 0.99), tp);
    summary += fmt::format(
        "{},{},{:.1f},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3f},{:.0f}\n",
        ScenarioName(r.scenario), r.rate, absl::ToDoubleSeconds(r.duration), rec.acked(),
        rec.refused(), r.succeeded, r.dead, r.canceled, r.expired, r.unfinished, r.missing, lost,
        rec.retries(), Ms(sub, 0.5), Ms(sub, 0.99), Ms(e2e, 0.5), Ms(e2e, 0.99), Ms(e2e, 0.999),
        Ms(wf, 0.99), rec.max_acked(), r.max_secs, fast);
  }
  if (auto st = Write(o.out + "/summary.csv", summary); !st.ok()) return st;

  for (const ScenarioReport& r : reports) {
    const std::string name = ScenarioName(r.scenario);
    const std::string dir = o.out + "/" + name;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
    const Recorder& rec = *r.rec;
    const std::vector<Recorder::Second> tl = rec.Timeline();
    // timeline.csv and the charts.
    std::string csv =
        "second,acknowledged,completed,failed_attempts,retries,submit_p50_ms,submit_p99_ms,e2e_p50_"
        "ms,"
        "e2e_p99_ms,server_outstanding,server_agents\n";
    Chart tput{name + ": tasks per second (acknowledged by the server, completed by agents)",
               "time since the scenario started (s)",
               "tasks per second",
               "outstanding tasks",
               {},
               {}};
    Chart lat{name + ": end-to-end latency per second (due time to completion acknowledged)",
              "time since the scenario started (s)",
              "latency (ms)",
              "",
              {},
              {}};
    ChartSeries acked{"acknowledged / s", "#4477aa", {}, false},
        completed{"completed / s", "#228833", {}, false},
        outstanding{"outstanding at the server", "#cc6677", {}, true};
    ChartSeries p50{"p50", "#4477aa", {}, false}, p99{"p99", "#cc6677", {}, false};
    for (size_t i = 0; i < tl.size(); ++i) {
      const Recorder::Second& s = tl[i];
      csv += fmt::format("{},{},{},{},{},{},{},{},{},{},{}\n", i, s.acked, s.completed, s.failed,
                         s.retries, Ms(s.submit, 0.5), Ms(s.submit, 0.99), Ms(s.e2e, 0.5),
                         Ms(s.e2e, 0.99), s.outstanding < 0 ? "" : std::to_string(s.outstanding),
                         s.agents < 0 ? "" : std::to_string(s.agents));
      tput.x.push_back(static_cast<double>(i));
      lat.x.push_back(static_cast<double>(i));
      acked.y.push_back(static_cast<double>(s.acked));
      completed.y.push_back(static_cast<double>(s.completed));
      outstanding.y.push_back(s.outstanding < 0 ? kNaN : static_cast<double>(s.outstanding));
      p50.y.push_back(s.e2e.count() ? s.e2e.Quantile(0.5) * 1000 : kNaN);
      p99.y.push_back(s.e2e.count() ? s.e2e.Quantile(0.99) * 1000 : kNaN);
    }
    tput.series = {acked, completed, outstanding};
    lat.series = {p50, p99};
    if (auto st = Write(dir + "/timeline.csv", csv); !st.ok()) return st;
    if (auto st = Write(dir + "/throughput.svg", LineChartSvg(tput)); !st.ok()) return st;
    if (auto st = Write(dir + "/latency.svg", LineChartSvg(lat)); !st.ok()) return st;
    // latency.csv: the percentiles of each measure.
    struct Measure {
      const char* what;
      Histogram h;
    };
    std::vector<Measure> measures = {
        {"submission (due time to acknowledgement)", rec.SubmitLatency(false)},
        {"end to end, tasks (due time to completion acknowledged)", rec.TaskLatency(false)}};
    if (r.scenario == Scenario::kDag)
      measures.push_back({"end to end, workflows (due time to the join step's completion)",
                          rec.WorkflowLatency()});
    if (rec.max_acked() > 0) {
      measures.push_back({"fast phase: submission call (a batch)", rec.SubmitLatency(true)});
      measures.push_back({"fast phase: end to end (closed loop: includes the queue it builds)",
                          rec.TaskLatency(true)});
    }
    std::string lcsv = "measure,count,p50_ms,p90_ms,p99_ms,p999_ms,max_ms\n";
    std::string ltable =
        "| measure | count | p50 | p90 | p99 | p99.9 | max |\n|---|---|---|---|---|---|---|\n";
    for (const Measure& m : measures) {
      lcsv += fmt::format("\"{}\",{},{},{},{},{},{}\n", m.what, m.h.count(), Ms(m.h, 0.5),
                          Ms(m.h, 0.9), Ms(m.h, 0.99), Ms(m.h, 0.999), Ms(m.h, 1));
      ltable +=
          fmt::format("| {} | {} | {} ms | {} ms | {} ms | {} ms | {} ms |\n", m.what, m.h.count(),
                      Ms(m.h, 0.5), Ms(m.h, 0.9), Ms(m.h, 0.99), Ms(m.h, 0.999), Ms(m.h, 1));
    }
    if (auto st = Write(dir + "/latency.csv", lcsv); !st.ok()) return st;

    // The markdown section.
    md += fmt::format("\n## {}\n\n### Setup\n\n", name);
    switch (r.scenario) {
      case Scenario::kBaseline:
        md += fmt::format("Single tasks at {:.0f}/s for {:.0f} s.", r.rate,
                          absl::ToDoubleSeconds(r.duration));
        break;
      case Scenario::kThroughput:
        md += fmt::format(
            "Single tasks at {:.0f}/s for {:.0f} s, then {} tasks as fast as the server takes them "
            "(batches of {} from {} threads, each sent when the last answer came back).",
            r.rate, absl::ToDoubleSeconds(r.duration), o.max_tasks, o.batch, o.threads);
        break;
      case Scenario::kDag:
        md += fmt::format(
            "{:.0f} tasks/s for {:.0f} s, half of them in workflows of five steps (fetch, then a, "
            "b "
            "and c in parallel, then join): {} workflows.",
            r.rate, absl::ToDoubleSeconds(r.duration), r.workflows);
        break;
      case Scenario::kChaos:
        md += fmt::format(
            "Single tasks at {:.0f}/s for {:.0f} s (10 attempts each, a 3 s execution timeout, "
            "backoff 100 ms to 1 s). "
            "Of the tasks an agent receives, {:.2f} % crash it (it dies holding the task, a new "
            "one starts a second "
            "later), {:.2f} % hang (never answered), {:.2f} % fail retryably and {:.2f} % fail for "
            "good. {}",
            r.rate, absl::ToDoubleSeconds(r.duration), o.chaos.crash * 100, o.chaos.hang * 100,
            o.chaos.fail * 100, o.chaos.poison * 100,
            o.chaos.kill_server
                ? "Halfway through, the server is killed with SIGKILL and started again."
                : "The server is not killed (--no-server-kill).");
        break;
    }
    md += fmt::format(" Agents: {}.\n\n", r.setup);
    md += "### Results\n\n| | |\n|---|---|\n";
    md += fmt::format("| tasks acknowledged | {} |\n", rec.acked());
    md += fmt::format("| submissions refused | {} |\n", rec.refused());
    md += fmt::format("| submission calls retried | {} |\n", rec.submit_retries());
    md += fmt::format("| succeeded | {} ({}) |\n", r.succeeded, Percent(r.succeeded, rec.acked()));
    md += fmt::format("| retries (attempts after the first) | {} |\n", rec.retries());
    md += fmt::format("| attempts failed by agents | {} |\n", rec.failed_attempts());
    md += fmt::format("| dead letters | {} |\n", r.dead);
    md += fmt::format("| canceled / expired | {} / {} |\n", r.canceled, r.expired);
    md += fmt::format(
        "| **lost** (unknown to the server / not ended after the drain) | **{}** ({} / {}) |\n",
        r.missing + r.unfinished, r.missing, r.unfinished);
    md += fmt::format("| open-loop phase | {:.1f} s |\n", r.open_loop_secs);
    if (r.max_secs > 0) {
      md += fmt::format(
          "| fast phase | {} tasks, first submission to last completion {:.2f} s = **{:.0f} "
          "tasks/s** |\n",
          rec.max_acked(), r.max_secs, static_cast<double>(rec.max_acked()) / r.max_secs);
    }
    md += fmt::format("| drain (after the last submission) | {:.1f} s |\n", r.drain_secs);
    if (r.scenario == Scenario::kChaos) {
      md += fmt::format("| agent crashes / hung tasks | {} / {} |\n", r.crashes, r.hangs);
      if (r.server_down_secs >= 0)
        md += fmt::format("| server down (kill to serving) | {:.2f} s |\n", r.server_down_secs);
    }
    md += "\n### Latency\n\n" + ltable;
    md += fmt::format(
        "\n### Throughput over time\n\n![throughput]({0}/throughput.svg)\n\n"
        "### Latency over time\n\n![latency]({0}/latency.svg)\n",
        name);
    md += "\n### Events\n\n";
    const std::vector<std::string> events = rec.Events();
    if (events.empty()) md += "None.\n";
    for (size_t i = 0; i < events.size() && i < 50; ++i) md += "- " + events[i] + "\n";
    if (events.size() > 50) md += fmt::format("- ... and {} more\n", events.size() - 50);
    md += fmt::format(
        "\n### Files\n\n[timeline.csv]({0}/timeline.csv) (per second), "
        "[latency.csv]({0}/latency.csv) (percentiles)\n",
        name);
  }
  return Write(o.out + "/report.md", md);
}

}  // namespace drover::loadtest
