"""history_check.py on small synthetic histories: a clean one passes, each kind of violation
fails the check it belongs to (and only that one), and ids past 999 are compared as numbers.

Run: python3 -m pytest -q tests/integration/test_history_check.py
"""

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

CHECKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "history_check.py")
T0 = 1_796_000_000_000  # a Unix time in ms


def token(epoch, n):
    return (epoch << 40) | n


def agent_id(epoch, n):
    return (epoch << 32) + n


class Hist:
    """A synthetic history written the way crash.sh records it: client and lease records
    (JSON lines), drover agent logs, and the final tasks (JSON, as `drover ls --json`)."""

    def __init__(self, path):
        self.path = path
        self.records = []
        self.logs = defaultdict(list)
        self.tasks = {}
        self.tokens = defaultdict(int)  # epoch -> last token counter

    def register(self, name, aid):
        self.logs[name].append("drover agent %s: registered as agent %d for crash with 4 slots"
                               % (name, aid))

    def ack(self, *ids, key=None):
        for i in ids:
            r = {"type": "ack", "id": i}
            if key is not None:
                r["key"] = key
            self.records.append(r)

    def lease(self, name, task, attempt, start, aid, tok=None, done=None, expires=None,
              view=True):
        """A lease as record.sh writes it: server_view while it is current, then done."""
        r = {"type": "lease", "agent": name, "task": task, "attempt": attempt, "at": start + 2,
             "server_view": None}
        if view:
            r["server_view"] = {
                "id": str(task), "state": "TASK_STATE_LEASED", "attempts": attempt,
                "agent_id": str(aid), "lease_token": str(tok),
                "lease_expires_unix_ms": str(expires or start + 3000),
                "history": [{"number": attempt, "agent_id": str(aid),
                             "started_unix_ms": str(start)}]}
        self.records.append(r)
        if done is not None:
            self.records.append({"type": "done", "agent": name, "task": task,
                                 "attempt": attempt, "at": done})

    def report(self, name, task, attempt, outcome="succeeded", refused=None):
        line = "drover agent %s: task %d attempt %d %s in 20 ms" % (name, task, attempt, outcome)
        if refused:
            line += "; report refused: " + refused
        self.logs[name].append(line)

    def task(self, tid, state="SUCCEEDED", history=(), failures=0, max_attempts=5, key=None):
        t = {"id": str(tid), "spec": {"type": "crash"}, "state": "TASK_STATE_" + state,
             "attempts": len(history), "history": list(history),
             "effective_max_attempts": max_attempts}
        if failures:
            t["failures"] = failures
        if key is not None:
            t["spec"]["idempotency_key"] = key
        self.tasks[tid] = t

    def clean_task(self, tid, name="w1", epoch=1, n=1, start=None, key=None, ack=True):
        """Acknowledged, leased once, completed once, accepted, SUCCEEDED."""
        start = T0 + tid * 10 if start is None else start
        aid = agent_id(epoch, n)
        self.tokens[epoch] += 1
        tok = token(epoch, self.tokens[epoch])
        if ack:
            self.ack(tid, key=key)
        self.lease(name, tid, 1, start, aid, tok, done=start + 25)
        self.report(name, tid, 1)
        self.task(tid, key=key, history=[attempt(1, aid, start, start + 27, "succeeded")])

    def write(self):
        os.makedirs(self.path, exist_ok=True)
        with open(os.path.join(self.path, "records.jsonl"), "w") as f:
            for r in self.records:
                f.write(json.dumps(r) + "\n")
        for name, lines in self.logs.items():
            with open(os.path.join(self.path, "agent-%s.log" % name), "w") as f:
                f.write("\n".join(lines) + "\n")
        with open(os.path.join(self.path, "tasks.json"), "w") as f:
            # One ls --json page, ids as strings as protobuf prints them, in id order.
            json.dump({"tasks": [self.tasks[k] for k in sorted(self.tasks)]}, f, indent=1)

    def check(self, *args):
        self.write()
        p = subprocess.run([sys.executable, CHECKER, self.path] + list(args),
                           capture_output=True, text=True, timeout=60)
        return Result(p)


def attempt(number, aid, started, ended=None, outcome=None, counted=False):
    a = {"number": number, "agent_id": str(aid), "started_unix_ms": str(started)}
    if ended is not None:
        a["ended_unix_ms"] = str(ended)
    if outcome is not None:
        a["outcome"] = outcome
    if counted:
        a["counted"] = True
    return a


class Result:
    def __init__(self, p):
        self.rc = p.returncode
        self.out = p.stdout
        self.err = p.stderr
        self.lines = p.stdout.splitlines()

    def line(self, check):
        """The ok/FAIL line of check 'a'..'f'."""
        for ln in self.lines:
            if ln.startswith(("ok: (%s)" % check, "FAIL: (%s)" % check)):
                return ln
        raise AssertionError("no line for check (%s) in:\n%s%s" % (check, self.out, self.err))

    def failed(self):
        return {ln.split("(")[1][0] for ln in self.lines if ln.startswith("FAIL: (")}

    def __repr__(self):
        return "rc=%d\n%s%s" % (self.rc, self.out, self.err)


def clean(tmp_path, n=3):
    h = Hist(str(tmp_path / "history"))
    h.register("w1", agent_id(1, 1))
    h.register("w2", agent_id(1, 2))
    for tid in range(1, n + 1):
        h.clean_task(tid, name="w1" if tid % 2 else "w2", n=1 if tid % 2 else 2,
                     key="cli-k-%d" % tid)
    return h


def test_clean_history_passes(tmp_path):
    h = clean(tmp_path)
    # Committed but never acknowledged (the reply was lost): allowed.
    h.clean_task(4, ack=False)
    r = h.check()
    assert r.rc == 0, r
    assert r.failed() == set(), r
    assert r.lines[-1] == "history check: 6 passed, 0 failed", r
    assert "3 acknowledged, 0 missing (1 exist without an acknowledgement" in r.line("a")


def test_missing_acknowledged_task_fails(tmp_path):
    h = clean(tmp_path)
    h.ack(7)  # acknowledged, but the server does not have it
    r = h.check()
    assert r.rc == 1, r
    assert r.failed() == {"a"}, r
    assert "missing: 1 of 4: 7" in r.line("a")
    assert r.lines[-1] == "history check: 5 passed, 1 failed", r


def test_acknowledged_task_in_wrong_state_fails(tmp_path):
    h = clean(tmp_path)
    h.tasks[2]["state"] = "TASK_STATE_DEAD"
    h.tasks[2]["history"][0]["outcome"] = "failed"
    h.logs["w2"] = [ln for ln in h.logs["w2"] if "task 2 " not in ln]
    r = h.check()
    assert r.failed() == {"b"}, r
    assert "did not end SUCCEEDED (DEAD 1): 2" in r.line("b")
    # ... which is what a run expecting DEAD wants for that task, not for the others.
    r = h.check("--expect-state", "dead")
    assert "2 acknowledged did not end DEAD" in r.line("b")


def test_double_accepted_completion_fails(tmp_path):
    h = clean(tmp_path)
    # Task 3 ran again on w2 after a restart (epoch 2) and that completion was accepted too.
    aid2 = agent_id(2, 1)
    h.register("w2", aid2)
    start = T0 + 500
    h.lease("w2", 3, 1, start, aid2, token(2, 1), done=start + 20)
    h.report("w2", 3, 1)
    r = h.check()
    assert r.rc == 1, r
    assert "b" in r.failed(), r
    assert "1 had a completion accepted twice: 3" in r.line("b")


def test_double_succeeded_attempts_in_server_history_fail(tmp_path):
    h = clean(tmp_path)
    aid = agent_id(1, 2)
    h.tasks[1]["history"].append(attempt(2, aid, T0 + 900, T0 + 950, "succeeded"))
    r = h.check()
    assert "b" in r.failed(), r
    assert "completion accepted twice: 1" in r.line("b")


def test_refused_completion_is_not_counted(tmp_path):
    h = clean(tmp_path)
    # Task 7's first lease (epoch 1, on w1) died with the server; w1's report went to the
    # restarted server (epoch 2) and was refused; w2's lease of epoch 2 succeeded.
    h.ack(7)
    old, new = agent_id(1, 1), agent_id(2, 1)
    h.register("w2", new)
    h.lease("w1", 7, 1, T0 + 1, old, token(1, 50), done=T0 + 400)
    h.report("w1", 7, 1, refused="lease_token: completion refused, lease %d of agent %d is not "
             "the current lease of task 7 (task is leased)" % (token(1, 50), old))
    h.lease("w2", 7, 1, T0 + 300, new, token(2, 1), done=T0 + 350)
    h.report("w2", 7, 1)
    h.task(7, history=[attempt(1, new, T0 + 300, T0 + 360, "succeeded")])
    r = h.check()
    assert r.rc == 0, r
    assert "4 accepted completion(s) (agents)" in r.line("b")
    assert "1 refused" in r.out


def test_stale_token_accepted_fails(tmp_path):
    h = Hist(str(tmp_path / "history"))
    a, b = agent_id(1, 1), agent_id(1, 2)
    h.register("w1", a)
    h.register("w2", b)
    h.ack(5)
    # w1's lease (token 5) expired at +300 and the task went to w2 (token 9) at +500; the
    # server then accepted w1's late completion at +2000 under the old token.
    h.lease("w1", 5, 1, T0, a, token(1, 5), done=T0 + 1990, expires=T0 + 300)
    h.report("w1", 5, 1)
    h.lease("w2", 5, 2, T0 + 500, b, token(1, 9), expires=T0 + 3500)
    h.report("w2", 5, 2, refused="lease_token: completion refused (task is succeeded)")
    h.task(5, history=[attempt(1, a, T0, T0 + 2000, "succeeded"),
                       attempt(2, b, T0 + 500, T0 + 2000, "canceled")])
    r = h.check()
    assert r.rc == 1, r
    assert r.failed() == {"c"}, r
    assert "stale token" in r.line("c") and r.line("c").endswith(": 5")


def test_completion_accepted_by_an_older_epoch_fails(tmp_path):
    h = Hist(str(tmp_path / "history"))
    old, new = agent_id(1, 1), agent_id(2, 1)
    h.register("w1", old)
    h.register("w2", new)
    h.ack(8)
    # A server of epoch 2 leased the task at +100; the one of epoch 1, supposedly gone,
    # accepted a completion at +400. Tokens unknown (no server views): epochs decide.
    h.lease("w2", 8, 1, T0 + 100, new, view=False, done=T0 + 150)
    h.report("w2", 8, 1, refused="lease_token: completion refused (task is succeeded)")
    h.task(8, history=[attempt(1, new, T0 + 100, T0 + 160, "interrupted"),
                       attempt(1, old, T0, T0 + 400, "succeeded")])
    r = h.check()
    assert "c" in r.failed(), r


def test_overlapping_same_epoch_leases_fail(tmp_path):
    h = Hist(str(tmp_path / "history"))
    a, b = agent_id(1, 1), agent_id(1, 2)
    h.register("w1", a)
    h.register("w2", b)
    h.ack(6)
    # Leased to w1 (token 3, valid until +3000) and, at +100, to w2 as well.
    h.lease("w1", 6, 1, T0, a, token(1, 3), done=T0 + 400)
    h.report("w1", 6, 1, refused="lease_token: completion refused (task is succeeded)")
    h.lease("w2", 6, 2, T0 + 100, b, token(1, 4), done=T0 + 200)
    h.report("w2", 6, 2)
    h.task(6, history=[attempt(2, b, T0 + 100, T0 + 210, "succeeded")])
    r = h.check()
    assert r.rc == 1, r
    assert r.failed() == {"d"}, r
    assert r.line("d").endswith(": 1: 6")


def test_same_token_to_two_agents_fails(tmp_path):
    h = clean(tmp_path)
    tok = int(h.records[1]["server_view"]["lease_token"])  # task 1's lease, on w1
    h.register("w3", agent_id(1, 3))
    h.lease("w3", 1, 1, T0 + 12, agent_id(1, 3), tok, done=T0 + 30)
    r = h.check()
    assert "d" in r.failed(), r


def test_overlapping_leases_of_different_epochs_pass(tmp_path):
    # The crash case: w1's command still runs under epoch 1's lease after the server died;
    # the restarted server (epoch 2) leases the task to w2. Not a double lease.
    h = Hist(str(tmp_path / "history"))
    old, new = agent_id(1, 1), agent_id(2, 2)
    h.register("w1", old)
    h.register("w2", new)
    h.ack(1)
    h.lease("w1", 1, 1, T0, old, token(1, 1), done=T0 + 900)
    h.report("w1", 1, 1, refused="lease_token: completion refused, lease %d of agent %d is not "
             "the current lease of task 1 (task is succeeded)" % (token(1, 1), old))
    h.lease("w2", 1, 1, T0 + 300, new, token(2, 1), done=T0 + 400)
    h.report("w2", 1, 1)
    h.task(1, history=[attempt(1, new, T0 + 300, T0 + 410, "succeeded")])
    r = h.check()
    assert r.rc == 0, r


def test_sequential_same_epoch_leases_pass(tmp_path):
    # w1's lease expired (the server closed it at +3000); w2 got the task at +3001.
    h = Hist(str(tmp_path / "history"))
    a, b = agent_id(1, 1), agent_id(1, 2)
    h.register("w1", a)
    h.register("w2", b)
    h.ack(1)
    h.lease("w1", 1, 1, T0, a, token(1, 1), done=T0 + 5000, expires=T0 + 3000)
    h.report("w1", 1, 1, outcome="failed (exit status 1)", refused="lease_token: failure refused")
    h.lease("w2", 1, 2, T0 + 3001, b, token(1, 2), done=T0 + 3050)
    h.report("w2", 1, 2)
    h.task(1, history=[attempt(1, a, T0, T0 + 3000, "lease_expired", counted=True),
                       attempt(2, b, T0 + 3001, T0 + 3060, "succeeded")], failures=1)
    r = h.check()
    assert r.rc == 0, r
    assert "1 same-epoch pair(s)" in r.line("d")


def test_attempts_over_max_fail(tmp_path):
    h = clean(tmp_path)
    aid = agent_id(1, 1)
    hist = [attempt(i, aid, T0 + i * 100, T0 + i * 100 + 50, "failed", counted=True)
            for i in range(1, 4)]
    hist.append(attempt(4, aid, T0 + 400, T0 + 450, "succeeded"))
    h.ack(9)
    h.task(9, history=hist, failures=3, max_attempts=3)  # 3 counted failures, then a 4th try
    r = h.check()
    assert r.rc == 1, r
    assert r.failed() == {"e"}, r
    assert r.line("e").endswith(": 1 task(s): 9")


def test_uncounted_attempts_over_max_pass(tmp_path):
    h = clean(tmp_path)
    aid = agent_id(1, 1)
    # Two leases lost to server restarts (uncounted), two counted failures, then success.
    hist = [attempt(1, aid, T0, T0 + 10, "interrupted"), attempt(2, aid, T0 + 20, T0 + 30,
                                                                 "interrupted"),
            attempt(3, aid, T0 + 40, T0 + 50, "failed", counted=True),
            attempt(4, aid, T0 + 60, T0 + 70, "failed", counted=True),
            attempt(5, aid, T0 + 80, T0 + 90, "succeeded")]
    h.ack(9)
    h.task(9, history=hist, failures=2, max_attempts=3)
    r = h.check()
    assert r.rc == 0, r
    assert "1 had more leases than max attempts" in r.line("e")


def test_exhausted_and_dead_passes(tmp_path):
    h = Hist(str(tmp_path / "history"))
    aid = agent_id(1, 1)
    h.register("w1", aid)
    h.ack(1)
    h.task(1, state="DEAD", failures=3, max_attempts=3,
           history=[attempt(i, aid, T0 + i, T0 + i, "failed", counted=True) for i in (1, 2, 3)])
    r = h.check("--expect-state", "TASK_STATE_DEAD")
    assert r.rc == 0, r


def test_ids_past_999_compare_as_numbers(tmp_path):
    # Lexical order puts 1000 before 999 and 10000 before 2: nothing here may depend on it.
    h = Hist(str(tmp_path / "history"))
    h.register("w1", agent_id(1, 1))
    ids = list(range(990, 1011)) + [2, 10000, 10001]
    for tid in ids:
        h.clean_task(tid)
    r = h.check()
    assert r.rc == 0, r
    assert "%d acknowledged, 0 missing" % len(ids) in r.line("a")

    # Acknowledged ids missing from the server: counted exactly, shown in numeric order.
    h.ack(999_999, 1_000_000, 1011, 99)
    r = h.check()
    assert r.failed() == {"a"}, r
    assert "missing: 4 of %d: 99, 1011, 999999, 1000000" % (len(ids) + 4) in r.line("a")


@pytest.mark.parametrize("lost", [9, 999, 1000, 1500])
def test_ids_past_999_missing_one_in_thousands(tmp_path, lost):
    # crash.sh used to join `sort -n` output, which join reads in lexical order: with ids
    # 1..1200 and 999 missing it counted 202 missing.
    h = Hist(str(tmp_path / "history"))
    h.register("w1", agent_id(1, 1))
    for tid in range(1, 1501):
        if tid == lost:
            h.ack(tid)  # acknowledged, then lost by the server
        else:
            h.clean_task(tid)
    r = h.check()
    assert r.failed() == {"a"}, r
    assert "missing: 1 of 1500: %d" % lost in r.line("a")
    assert r.line("a").endswith(": %d" % lost)


def test_ids_past_999_wrong_state_counted_exactly(tmp_path):
    h = Hist(str(tmp_path / "history"))
    h.register("w1", agent_id(1, 1))
    for tid in range(1, 1201):
        h.clean_task(tid)
    for tid in (998, 999, 1000, 1001, 1199):
        h.tasks[tid]["state"] = "TASK_STATE_CANCELED"
        h.tasks[tid]["history"][0]["outcome"] = "canceled"
        h.logs["w1"].remove("drover agent w1: task %d attempt 1 succeeded in 20 ms" % tid)
    r = h.check()
    assert r.failed() == {"b"}, r
    assert "5 acknowledged did not end SUCCEEDED (CANCELED 5): 998, 999, 1000, 1001, 1199" \
        in r.line("b")


def test_many_failures_show_ten_examples(tmp_path):
    h = clean(tmp_path)
    h.ack(*range(2000, 2025))
    r = h.check()
    assert r.line("a").endswith(": 2000, 2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, "
                                "2009, ...")


def test_doubled_idempotency_key_fails(tmp_path):
    h = clean(tmp_path)
    h.clean_task(10, key="cli-k-1", ack=False)  # a retried submission that was not deduplicated
    r = h.check()
    assert r.failed() == {"f"}, r
    assert "2 task(s) share an idempotency key" in r.line("f")


def test_legacy_and_submit_json_client_records(tmp_path):
    h = clean(tmp_path)
    h.records = [r for r in h.records if r["type"] != "ack"]
    h.write()
    # `drover submit -q` output (bare ids) under any name, given with --records ...
    legacy = tmp_path / "acked"
    legacy.write_text("1\n2\n")
    # ... and newline-stripped `drover submit --json` output, one batch a line.
    reply = {"task": {"id": "3", "spec": {"idempotency_key": "cli-k-3"}}, "deduplicated": True}
    (tmp_path / "history" / "client.jsonl").write_text(json.dumps(reply, indent=1).replace(
        "\n", "") + "\n")
    p = subprocess.run([sys.executable, CHECKER, h.path, "--records", str(legacy)],
                       capture_output=True, text=True)
    r = Result(p)
    assert r.rc == 0, r
    assert "3 acknowledged submission(s)" in r.out and "1 deduplicated" in r.out
    h.tasks.pop(2)
    h.write()
    p = subprocess.run([sys.executable, CHECKER, h.path, "--records", str(legacy)],
                       capture_output=True, text=True)
    assert "missing: 1 of 3: 2" in Result(p).line("a")


def test_nothing_to_check_is_an_error(tmp_path):
    p = subprocess.run([sys.executable, CHECKER, str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 2


@pytest.mark.parametrize("bad", ['{"type": "lease", "agent": "w1", "task": 1, "attem',
                                 "not json at all"])
def test_torn_record_lines_are_reported_not_fatal(tmp_path, bad):
    h = clean(tmp_path)
    h.write()
    with open(os.path.join(h.path, "records.jsonl"), "a") as f:
        f.write(bad + "\n")
    p = subprocess.run([sys.executable, CHECKER, h.path], capture_output=True, text=True)
    r = Result(p)
    assert r.rc == 0, r
    assert "1 unreadable record line(s)" in r.out
