#!/usr/bin/env python3
"""Checks a recorded history of a drover run, in the style of Jepsen's Elle: what clients were
told, what agents saw, and what the server reports at the end must fit together.

Usage:
  history_check.py [DIR_OR_FILE...] [--records F] [--agent-log F] [--tasks F]
                   [--drover BIN [--server ADDR]] [--expect-state SUCCEEDED]

Inputs (a directory is searched recursively; files are classified by name):
  *.jsonl  records, one per line, by their "type" (see below); a line may also hold the raw,
           newline-stripped output of `drover submit --json` (one or more {"task": ...}
           documents: each is an acknowledged submission), or bare task ids (the output of
           `drover submit -q`), each an acknowledged submission.
  *.log    stderr of `drover agent`: its "registered as agent ID" lines and its one line per
           finished attempt ("task N attempt A succeeded in X ms[; report refused: ...]").
  *.json   the final tasks: `drover ls --json` pages, `drover get --json` output, or task
           objects one per line (what --drover saves as tasks.json).
With --drover the final tasks are fetched through the CLI (ls --json page by page, then
get --json for acknowledged ids the listing lacks, since the server lists only what it holds
in memory) and saved as tasks.json in the first directory given; tasks*.json files already
there are then ignored. Through the CLI this is the same with SQLite and PostgreSQL.

Record types (JSON objects, one per line; ids are integers, times Unix ms):
  {"type": "ack", "id": 12, "key": "k"}      a submission was acknowledged (key optional)
  {"type": "lease", "agent": "w1", "task": 12, "attempt": 1, "at": T,
   "token": N, "epoch": E, "lease_agent_id": A, "lease_start_ms": S, "expires_ms": X,
   "server_view": {...}}                     an agent received a lease; all but agent, task
                                             and attempt are optional. server_view is
                                             `drover get --json` of the task as the agent
                                             started: while it is LEASED with the same attempt
                                             it gives token, lease agent id, start and expiry.
  {"type": "done", "agent": "w1", "task": 12, "attempt": 1, "at": T}
                                             the agent's command for that lease ended
  {"type": "complete", "agent": "w1", "task": 12, "attempt": 1, "outcome": "succeeded",
   "accepted": true, "token": N, "at": T}     an agent reported an outcome; accepted tells
                                             whether the server acknowledged it
  {"type": "register", "agent": "w1", "agent_id": A}
                                             the agent registered under that id
Tokens carry the server's epoch in their top 24 bits (token >> 40), agent ids in bits 32 and
up (agent_id >> 32): leases of different epochs come from different server runs.

Checks (each prints "ok: ..." or "FAIL: ..."; the last line is "history check: N passed, N
failed"; the exit status is 0 only when all passed):
  (a) no acknowledged submission is missing (unacknowledged ones may exist or not);
  (b) every acknowledged submission ended in the expected state, and every task's completion
      was accepted at most once, never lost, and the task was not leased again after it;
  (c) no completion was accepted under a stale token: none while the server had already
      issued the task a newer lease (a higher token, or a later epoch);
  (d) no task was leased to two agents at once under one epoch (or one token to two agents);
  (e) counted attempts never exceed max attempts (failures, plus the success);
  (f) idempotency keys: no key is carried by two tasks, and an acknowledged key names the
      acknowledged id.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from collections import defaultdict

STATE_NAMES = {
    0: "UNSPECIFIED", 1: "WAITING", 2: "READY", 3: "LEASED", 4: "RETRY_WAIT",
    5: "SUCCEEDED", 6: "DEAD", 7: "CANCELED", 8: "EXPIRED",
}
TOKEN_EPOCH_SHIFT = 40
AGENT_EPOCH_SHIFT = 32
EXAMPLES = 10


def state_name(value):
    """TASK_STATE_SUCCEEDED, SUCCEEDED, succeeded or 5 -> SUCCEEDED."""
    if value is None:
        return "UNSPECIFIED"
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return STATE_NAMES.get(int(value), str(value))
    s = str(value).upper()
    return s[len("TASK_STATE_"):] if s.startswith("TASK_STATE_") else s


def to_int(value):
    """An id, token or time as an int (protobuf JSON prints 64-bit ints as strings)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def examples(ids):
    ids = sorted(set(ids))
    shown = ", ".join(str(i) for i in ids[:EXAMPLES])
    return shown + (", ..." if len(ids) > EXAMPLES else "")


def json_values(text):
    """Every JSON value in text (concatenated or whitespace-separated); ValueError on junk."""
    dec = json.JSONDecoder()
    out, i, n = [], 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            return out
        value, i = dec.raw_decode(text, i)
        out.append(value)


class Lease:
    """One lease of one task, from whatever evidence there is (agent records, server history)."""

    def __init__(self, task):
        self.task = task
        self.attempt = None
        self.agent = None  # agent name
        self.agent_id = None  # the agent's registration id on the server
        self.token = None
        self.epoch = None
        self.start = None  # server side: when the lease was issued
        self.at = None  # agent side: when its command started
        self.end = None  # server side: when the attempt was closed
        self.done = None  # agent side: when its command ended
        self.expires = None  # the lease's first expiry
        self.outcome = None  # the server's outcome of the attempt
        self.from_record = False
        self.from_server = False

    def fill_epoch(self):
        if self.epoch is None and self.token:
            self.epoch = self.token >> TOKEN_EPOCH_SHIFT
        if self.epoch is None and self.agent_id:
            self.epoch = self.agent_id >> AGENT_EPOCH_SHIFT

    def first_seen(self):
        """Upper bound of when the lease was issued."""
        return self.start if self.start is not None else self.at

    def held_until(self):
        """Upper bound of when it stopped being the task's lease (None: unknown)."""
        ends = [t for t in (self.end, self.done, self.expires) if t is not None]
        return min(ends) if ends else None


class History:
    def __init__(self):
        self.acks = {}  # id -> set of keys
        self.ack_replies = 0
        self.deduplicated = 0
        self.lease_records = []
        self.done_records = []
        self.completions = []  # dicts: agent, task, attempt, outcome, accepted, token, ...
        self.names = {}  # agent id -> agent name
        self.tasks = {}  # id -> final task (dict)
        self.bad_lines = []  # (file, line number)
        self.files = 0

    # ---- loading

    def add_ack(self, task_id, key=None):
        if task_id is None:
            return False
        self.acks.setdefault(task_id, set())
        if key:
            self.acks[task_id].add(key)
        return True

    def add_value(self, v):
        """One JSON value of a record line; False when it is not a record."""
        if isinstance(v, bool):
            return False
        if isinstance(v, int):
            return self.add_ack(v)
        if isinstance(v, list):
            return all(self.add_value(x) for x in v)
        if not isinstance(v, dict):
            return False
        if "type" not in v and isinstance(v.get("task"), dict):  # a submit --json reply
            t = v["task"]
            self.ack_replies += 1
            if v.get("deduplicated"):
                self.deduplicated += 1
            return self.add_ack(to_int(t.get("id")), (t.get("spec") or {}).get("idempotency_key"))
        kind = v.get("type")
        if kind == "ack":
            self.ack_replies += 1
            ids = v.get("ids") if isinstance(v.get("ids"), list) else [v.get("id")]
            return all(self.add_ack(to_int(i), v.get("key")) for i in ids)
        if kind in ("lease", "done", "complete"):
            if to_int(v.get("task")) is None:
                return False
            {"lease": self.lease_records, "done": self.done_records,
             "complete": self.completions}[kind].append(v)
            return True
        if kind == "register":
            aid = to_int(v.get("agent_id"))
            if aid is None:
                return False
            self.names[aid] = v.get("agent")
            return True
        return False

    def load_records(self, path):
        self.files += 1
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    values = json_values(line)
                except ValueError:
                    self.bad_lines.append((path, n))
                    continue
                if not all(self.add_value(v) for v in values):
                    self.bad_lines.append((path, n))

    AGENT_LINE = re.compile(r"^drover agent (?P<name>.+?): (?P<rest>.*)$")
    REGISTERED = re.compile(r"^registered as agent (?P<id>\d+)\b")
    FINISHED = re.compile(r"^task (?P<task>\d+) attempt (?P<attempt>\d+) (?P<outcome>.+?) in "
                          r"(?P<ms>\d+) ms(?:; report refused: (?P<why>.*))?$")
    REFUSED_LEASE = re.compile(r"lease (?P<token>\d+) of agent (?P<agent>\d+)")

    def load_agent_log(self, path):
        self.files += 1
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                m = self.AGENT_LINE.match(line.rstrip("\n"))
                if not m:
                    continue
                name, rest = m.group("name"), m.group("rest")
                r = self.REGISTERED.match(rest)
                if r:
                    self.names[int(r.group("id"))] = name
                    continue
                r = self.FINISHED.match(rest)
                if not r:
                    continue
                c = {"type": "complete", "agent": name, "task": int(r.group("task")),
                     "attempt": int(r.group("attempt")),
                     "outcome": "succeeded" if r.group("outcome") == "succeeded" else "failed",
                     "accepted": r.group("why") is None, "source": "%s:%d" % (path, n)}
                if r.group("why"):
                    c["refusal"] = r.group("why")
                    lm = self.REFUSED_LEASE.search(r.group("why"))
                    if lm:
                        c["token"] = int(lm.group("token"))
                        c["agent_id"] = int(lm.group("agent"))
                self.completions.append(c)

    def add_task_doc(self, doc):
        if isinstance(doc, list):
            for d in doc:
                self.add_task_doc(d)
        elif isinstance(doc, dict):
            if isinstance(doc.get("tasks"), list):  # an ls page
                self.add_task_doc(doc["tasks"])
            elif isinstance(doc.get("task"), dict):  # a submit reply
                self.add_task_doc(doc["task"])
            elif to_int(doc.get("id")) is not None:
                self.tasks[to_int(doc["id"])] = doc

    def load_tasks(self, path):
        self.files += 1
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        try:
            docs = json_values(text)
        except ValueError:
            docs = []
            for n, line in enumerate(text.splitlines(), 1):
                try:
                    docs.extend(json_values(line))
                except ValueError:
                    self.bad_lines.append((path, n))
        for d in docs:
            self.add_task_doc(d)

    def fetch_tasks(self, drover, server, save):
        env = dict(os.environ)
        if server:
            env["DROVER_SERVER"] = server

        def cli(args):
            last = None
            for _ in range(5):
                p = subprocess.run([drover] + args, env=env, capture_output=True, text=True,
                                   timeout=120)
                if p.returncode == 0:
                    return p.stdout
                last = p.stderr.strip()
                if "not found" in last.lower():
                    return None
            raise RuntimeError("drover %s: %s" % (" ".join(args), last))

        docs, token, pages = [], None, 0
        while True:
            args = ["ls", "--json", "--limit", "1000"] + (["--page-token", token] if token else [])
            page = json.loads(cli(args))
            pages += 1
            docs.extend(page.get("tasks", []))
            token = page.get("next_page_token")
            if not token:
                break
        listed = {to_int(t.get("id")) for t in docs}
        fetched = 0
        for task_id in sorted(set(self.acks) - listed):
            out = cli(["get", "--json", str(task_id)])
            if out:
                docs.extend(json_values(out))
                fetched += 1
        for d in docs:
            self.add_task_doc(d)
        if save:
            with open(save, "w", encoding="utf-8") as f:
                for d in docs:
                    f.write(json.dumps(d, separators=(",", ":")) + "\n")
        return "fetched %d tasks through the CLI (%d listed in %d page(s), %d by get)%s" % (
            len(docs), len(listed), pages, fetched, (", saved to " + save) if save else "")

    # ---- leases: agent records and the server's attempt history merged into one set

    def build_leases(self):
        by_task = defaultdict(list)
        server_key = {}  # (task, agent_id, start) -> Lease
        for tid, t in self.tasks.items():
            for a in t.get("history") or []:
                le = Lease(tid)
                le.attempt = to_int(a.get("number"))
                le.agent_id = to_int(a.get("agent_id"))
                le.start = to_int(a.get("started_unix_ms"))
                le.end = to_int(a.get("ended_unix_ms")) or None
                le.outcome = a.get("outcome") or None
                le.from_server = True
                if le.agent_id in self.names:
                    le.agent = self.names[le.agent_id]
                if le.agent_id is not None and le.start is not None:
                    server_key[(tid, le.agent_id, le.start)] = le
                by_task[tid].append(le)
            # The current lease of a task still LEASED (not in the history's ends).
            if state_name(t.get("state")) == "LEASED" and to_int(t.get("lease_token")):
                hist = t.get("history") or []
                if hist:
                    a = hist[-1]
                    le = server_key.get((tid, to_int(a.get("agent_id")),
                                         to_int(a.get("started_unix_ms"))))
                    if le is not None:
                        le.token = to_int(t.get("lease_token"))
                        le.expires = to_int(t.get("lease_expires_unix_ms"))

        done = defaultdict(list)  # (agent, task, attempt) -> done times
        for d in self.done_records:
            done[(d.get("agent"), to_int(d.get("task")), to_int(d.get("attempt")))].append(
                to_int(d.get("at")))
        for v in done.values():
            v.sort(key=lambda x: (x is None, x))

        records = sorted(self.lease_records, key=lambda r: (to_int(r.get("at")) or 0))
        for r in records:
            tid = to_int(r.get("task"))
            le = Lease(tid)
            le.attempt = to_int(r.get("attempt"))
            le.agent = r.get("agent")
            le.at = to_int(r.get("at"))
            le.token = to_int(r.get("token"))
            le.epoch = to_int(r.get("epoch"))
            le.agent_id = to_int(r.get("lease_agent_id"))
            le.start = to_int(r.get("lease_start_ms"))
            le.expires = to_int(r.get("expires_ms"))
            le.from_record = True
            sv = r.get("server_view")
            if isinstance(sv, dict) and le.token is None:
                self._from_server_view(le, sv)
            # The command's end: the first unclaimed "done" of the same agent, task and
            # attempt at or after its start.
            cands = done.get((le.agent, tid, le.attempt), [])
            for i, t in enumerate(cands):
                if t is None or le.at is None or t >= le.at:
                    le.done = cands.pop(i)
                    break
            # The same lease in the server's history: merge.
            merged = None
            if le.agent_id is not None and le.start is not None:
                merged = server_key.get((tid, le.agent_id, le.start))
            if merged is None:
                merged = self._match_by_name(by_task[tid], le)
            if merged is not None:
                for f in ("agent", "agent_id", "token", "epoch", "start", "at", "done",
                          "expires", "attempt"):
                    if getattr(merged, f) is None and getattr(le, f) is not None:
                        setattr(merged, f, getattr(le, f))
                merged.from_record = True
            else:
                by_task[tid].append(le)
        # A refused report names its own lease ("lease T of agent A"): the token of a lease
        # whose server view came too late (the server had restarted meanwhile).
        for c in self.completions:
            tok, aid = to_int(c.get("token")), to_int(c.get("agent_id"))
            tid = to_int(c.get("task"))
            if tok is None or aid is None or self.names.get(aid, c.get("agent")) != c.get("agent"):
                continue
            leases = by_task.get(tid, [])
            if any(le.token == tok for le in leases):
                continue
            cands = [le for le in leases if le.from_record and le.token is None
                     and le.agent == c.get("agent") and le.attempt == to_int(c.get("attempt"))]
            if len(cands) == 1:
                cands[0].token, cands[0].agent_id = tok, aid
        for leases in by_task.values():
            for le in leases:
                le.fill_epoch()
        return by_task

    def _from_server_view(self, le, sv):
        """Token, lease agent id, start and expiry from `get --json` as the command started,
        when that view is of this lease: LEASED at the same attempt, to this agent."""
        if state_name(sv.get("state")) != "LEASED" or to_int(sv.get("attempts")) != le.attempt:
            return
        aid = to_int(sv.get("agent_id"))
        if aid is not None and aid in self.names and le.agent is not None \
                and self.names[aid] != le.agent:
            return  # already another agent's lease (ours ended with a restart)
        le.token = to_int(sv.get("lease_token"))
        le.agent_id = aid
        le.expires = to_int(sv.get("lease_expires_unix_ms"))
        for a in reversed(sv.get("history") or []):
            if to_int(a.get("number")) == le.attempt and to_int(a.get("agent_id")) == aid:
                le.start = to_int(a.get("started_unix_ms"))
                break

    def _match_by_name(self, leases, le):
        """A server-history lease this record is of, without the server's ids on the record:
        the one lease with the same attempt, agent (by name or id) and a start not after the
        command's; None if there is none or more than one."""
        found = []
        for s in leases:
            if not s.from_server or s.from_record or s.attempt != le.attempt:
                continue
            if le.agent_id is not None and s.agent_id is not None:
                if le.agent_id != s.agent_id:
                    continue
            elif le.agent is None or s.agent != le.agent:
                continue
            if le.token is not None and s.token is not None and le.token != s.token:
                continue
            if le.at is not None and s.start is not None and s.start > le.at:
                continue
            found.append(s)
        return found[0] if len(found) == 1 else None


class Checker:
    def __init__(self, h, expect):
        self.h = h
        self.expect = expect
        self.passed = 0
        self.failed = 0
        self.leases = h.build_leases()

    def _different_agents(self, x, y):
        """By registration id when both have one, else by name; unknown: not different."""
        if x.agent_id is not None and y.agent_id is not None:
            return x.agent_id != y.agent_id
        names = self.h.names
        a = x.agent if x.agent is not None else names.get(x.agent_id)
        b = y.agent if y.agent is not None else names.get(y.agent_id)
        return a is not None and b is not None and a != b

    def report(self, ok, text):
        print(("ok: " if ok else "FAIL: ") + text)
        if ok:
            self.passed += 1
        else:
            self.failed += 1

    def info(self):
        h = self.h
        nleases = sum(len(v) for v in self.leases.values())
        with_epoch = sum(1 for v in self.leases.values() for le in v if le.epoch is not None)
        with_token = sum(1 for v in self.leases.values() for le in v if le.token is not None)
        recorded = sum(1 for v in self.leases.values() for le in v if le.from_record)
        epochs = sorted({le.epoch for v in self.leases.values() for le in v if le.epoch})
        acc = sum(1 for c in h.completions if c.get("accepted"))
        print("info: %d acknowledged submission(s) in %d acknowledgement(s) (%d deduplicated), "
              "%d final task(s)" % (len(h.acks), h.ack_replies, h.deduplicated, len(h.tasks)))
        print("info: %d lease(s) (%d recorded by agents, %d with an epoch, %d with a token%s), "
              "%d reported outcome(s) (%d accepted, %d refused)" % (
                  nleases, recorded, with_epoch, with_token,
                  (", epochs %d..%d" % (epochs[0], epochs[-1])) if epochs else "",
                  len(h.completions), acc, len(h.completions) - acc))
        if h.bad_lines:
            print("info: %d unreadable record line(s), e.g. %s:%d" % (
                len(h.bad_lines), h.bad_lines[0][0], h.bad_lines[0][1]))

    # ---- accepted completions: (task, token, epoch, accepted at, lease), one per evidence

    def accepted_completions(self):
        out = []
        for tid, leases in self.leases.items():
            for le in leases:
                if le.outcome == "succeeded":
                    out.append((tid, le, le.end))
        by_key = defaultdict(list)
        for tid, leases in self.leases.items():
            for le in leases:
                by_key[(le.agent, tid, le.attempt)].append(le)
        for c in self.h.completions:
            if not c.get("accepted") or c.get("outcome") != "succeeded":
                continue
            tid = to_int(c["task"])
            token = to_int(c.get("token"))
            cands = [le for le in by_key.get((c.get("agent"), tid, to_int(c.get("attempt"))), [])
                     if token is None or le.token in (None, token)]
            if any(le.outcome == "succeeded" for le in cands):
                continue  # the same completion as the server's history shows
            le = None
            if cands:
                # Ambiguous (the attempt number repeats after a restart): the newest lease.
                le = max(cands, key=lambda x: (x.token or 0, x.epoch or 0, x.first_seen() or 0))
            if le is None or (token is not None and le.token is None):
                le = Lease(tid)
                le.agent, le.token, le.attempt = c.get("agent"), token, to_int(c.get("attempt"))
                le.fill_epoch()
            out.append((tid, le, to_int(c.get("at")) or le.done))
        return out

    def run(self):
        h = self.h
        self.info()
        acked = set(h.acks)
        present = set(h.tasks)

        # (a)
        missing = acked - present
        extra = present - acked
        if missing:
            self.report(False, "(a) acknowledged submissions missing: %d of %d: %s" % (
                len(missing), len(acked), examples(missing)))
        else:
            self.report(True, "(a) every acknowledged submission exists: %d acknowledged, 0 "
                        "missing (%d exist without an acknowledgement, allowed)" % (
                            len(acked), len(extra)))

        # (b)
        wrong = {i for i in acked & present if state_name(h.tasks[i].get("state")) != self.expect}
        agent_ok = defaultdict(int)
        for c in h.completions:
            if c.get("accepted") and c.get("outcome") == "succeeded":
                agent_ok[to_int(c["task"])] += 1
        server_ok = defaultdict(int)
        for tid, t in h.tasks.items():
            for a in t.get("history") or []:
                if a.get("outcome") == "succeeded":
                    server_ok[tid] += 1
        twice = {i for i, n in agent_ok.items() if n > 1} | {i for i, n in server_ok.items() if n > 1}
        lost = {i for i in agent_ok if i not in h.tasks
                or state_name(h.tasks[i].get("state")) != "SUCCEEDED"}
        after = set()
        accepted = self.accepted_completions()
        for tid, c, at in accepted:
            if at is None:
                continue
            for le in self.leases.get(tid, []):
                if le is not c and le.first_seen() is not None and le.first_seen() > at \
                        and le.outcome != "succeeded":
                    after.add(tid)
        problems = []
        if wrong:
            states = defaultdict(int)
            for i in wrong:
                states[state_name(h.tasks[i].get("state"))] += 1
            problems.append("%d acknowledged did not end %s (%s): %s" % (
                len(wrong), self.expect,
                ", ".join("%s %d" % kv for kv in sorted(states.items())), examples(wrong)))
        if twice:
            problems.append("%d had a completion accepted twice: %s" % (len(twice), examples(twice)))
        if lost:
            problems.append("%d had an accepted completion but did not end SUCCEEDED: %s" % (
                len(lost), examples(lost)))
        if after:
            problems.append("%d were leased again after their completion was accepted: %s" % (
                len(after), examples(after)))
        if problems:
            self.report(False, "(b) " + "; ".join(problems))
        else:
            self.report(True, "(b) every acknowledged submission ended %s exactly once: %d "
                        "checked, %d accepted completion(s) (agents), %d succeeded attempt(s) "
                        "(server)" % (self.expect, len(acked & present), sum(agent_ok.values()),
                                      sum(server_ok.values())))

        # (c)
        stale, by_token, by_epoch, unknown = set(), 0, 0, 0
        for tid, c, at in accepted:
            if c.token is not None:
                by_token += 1
            elif c.epoch is not None:
                by_epoch += 1
            else:
                unknown += 1
                continue
            for le in self.leases.get(tid, []):
                if le is c:
                    continue
                if c.token is not None and le.token is not None:
                    newer = le.token > c.token
                else:
                    newer = le.epoch is not None and le.epoch > c.epoch
                issued = le.first_seen()
                if newer and (at is None or issued is None or issued < at):
                    stale.add(tid)
        if stale:
            self.report(False, "(c) completions accepted under a stale token (the server had "
                        "issued a newer lease): %d task(s): %s" % (len(stale), examples(stale)))
        else:
            self.report(True, "(c) no completion was accepted under a stale token: %d accepted "
                        "completion(s) checked (%d by token, %d by epoch, %d without either)" % (
                            len(accepted), by_token, by_epoch, unknown))

        # (d)
        double, pairs, cross, again = set(), 0, 0, 0
        for tid, leases in self.leases.items():
            again += len(leases) > 1
            known = [le for le in leases if le.epoch is not None]
            for i, x in enumerate(known):
                for y in known[i + 1:]:
                    if x.token is not None and x.token == y.token:
                        if self._different_agents(x, y):
                            double.add(tid)
                        continue
                    if x.epoch != y.epoch:
                        cross += 1
                        continue
                    if not self._different_agents(x, y):
                        continue
                    xs, ys = x.first_seen(), y.first_seen()
                    xe, ye = x.held_until(), y.held_until()
                    if None in (xs, ys, xe, ye):
                        continue
                    pairs += 1
                    if xs < ye and ys < xe:
                        double.add(tid)
        if double:
            self.report(False, "(d) tasks leased to two agents at once under one epoch: %d: %s" % (
                len(double), examples(double)))
        else:
            self.report(True, "(d) no task was leased to two agents at once under one epoch: "
                        "%d task(s) leased more than once, %d same-epoch pair(s) of leases "
                        "compared (%d pair(s) of different epochs)" % (again, pairs, cross))

        # (e)
        over, more_leases, checked = set(), set(), 0
        for tid, t in h.tasks.items():
            mx = to_int(t.get("effective_max_attempts"))
            if not mx:
                continue
            checked += 1
            hist = t.get("history") or []
            counted = max(to_int(t.get("failures")) or 0, sum(1 for a in hist if a.get("counted")))
            if state_name(t.get("state")) == "SUCCEEDED":
                counted += 1
            if counted > mx:
                over.add(tid)
            if (to_int(t.get("attempts")) or 0) > mx:
                more_leases.add(tid)
        if over:
            self.report(False, "(e) counted attempts over max attempts: %d task(s): %s" % (
                len(over), examples(over)))
        else:
            self.report(True, "(e) counted attempts never exceed max attempts: %d task(s) checked "
                        "(%d had more leases than max attempts, uncounted ones)" % (
                            checked, len(more_leases)))

        # (f)
        holders = defaultdict(set)
        for tid, t in h.tasks.items():
            k = (t.get("spec") or {}).get("idempotency_key")
            if k:
                holders[k].add(tid)
        doubled = {i for ids in holders.values() if len(ids) > 1 for i in ids}
        mismatched = set()
        keyed = 0
        for tid, keys in h.acks.items():
            for k in keys:
                keyed += 1
                if tid in h.tasks and (h.tasks[tid].get("spec") or {}).get("idempotency_key") != k:
                    mismatched.add(tid)
                if holders.get(k, {tid}) - {tid}:
                    mismatched.add(tid)
            if len(keys) > 1:
                mismatched.add(tid)
        problems = []
        if doubled:
            problems.append("%d task(s) share an idempotency key with another: %s" % (
                len(doubled), examples(doubled)))
        if mismatched:
            problems.append("%d acknowledged key(s) name another task: %s" % (
                len(mismatched), examples(mismatched)))
        if problems:
            self.report(False, "(f) " + "; ".join(problems))
        else:
            self.report(True, "(f) idempotency keys: %d key(s) on final tasks, each on one task; "
                        "%d acknowledged key(s) consistent" % (len(holders), keyed))

        print("history check: %d passed, %d failed" % (self.passed, self.failed))
        return self.failed == 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="*", help="directories or files (classified by name)")
    ap.add_argument("--records", action="append", default=[], help="a record file (JSON lines)")
    ap.add_argument("--agent-log", action="append", default=[], help="a drover agent log")
    ap.add_argument("--tasks", action="append", default=[], help="a final-tasks JSON file")
    ap.add_argument("--drover", help="fetch the final tasks through this drover binary")
    ap.add_argument("--server", help="the server for --drover (else DROVER_SERVER)")
    ap.add_argument("--expect-state", default="SUCCEEDED",
                    help="the terminal state acknowledged submissions must end in")
    args = ap.parse_args(argv)

    h = History()
    records, logs, tasks = list(args.records), list(args.agent_log), list(args.tasks)
    dirs = []
    for p in args.paths:
        if os.path.isdir(p):
            dirs.append(p)
            for root, _, files in os.walk(p):
                for f in sorted(files):
                    full = os.path.join(root, f)
                    if f.endswith(".jsonl"):
                        records.append(full)
                    elif f.endswith(".log"):
                        logs.append(full)
                    elif f.endswith(".json") and not args.drover:
                        tasks.append(full)
        elif p.endswith(".log"):
            logs.append(p)
        elif p.endswith(".json"):
            tasks.append(p)
        elif os.path.exists(p):
            records.append(p)
        else:
            print("history check: no such file or directory: %s" % p, file=sys.stderr)
            return 2
    for f in logs:  # first: the agents' registrations name the agent ids in the records
        h.load_agent_log(f)
    for f in records:
        h.load_records(f)
    for f in tasks:
        h.load_tasks(f)
    if args.drover:
        try:
            print("info: " + h.fetch_tasks(args.drover, args.server,
                                           os.path.join(dirs[0], "tasks.json") if dirs else None))
        except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as e:
            print("FAIL: cannot fetch the final tasks: %s" % e)
            print("history check: 0 passed, 1 failed")
            return 1
    if h.files == 0 and not args.drover:
        print("history check: nothing to check (no records, agent logs or tasks given)",
              file=sys.stderr)
        return 2
    return 0 if Checker(h, state_name(args.expect_state)).run() else 1


if __name__ == "__main__":
    sys.exit(main())
