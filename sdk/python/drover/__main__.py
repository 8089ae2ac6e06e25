"""python3 -m drover: a small CLI for scripts (the full one is the `drover` binary).

  python3 -m drover submit TYPE [JSON] [--priority high] [--wait]
  python3 -m drover get ID | wait ID [--timeout S] | cancel ID
  python3 -m drover stats

Connection from DROVER_SERVER, DROVER_TOKEN / DROVER_TOKEN_FILE (or --server, --token-file).
Answers are JSON on stdout; a refusal prints the server's error on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any, List, Optional

from .client import Client
from .errors import DroverError
from .types import Task, WaitTimeout


def _task_json(t: Task) -> dict:
    def show(v: Any) -> Any:
        return base64.b64encode(v).decode() if isinstance(v, bytes) else v
    return {"id": t.id, "type": t.type, "state": t.state, "attempts": t.attempts,
            "payload": show(t.payload), "result": show(t.result), "error": t.error,
            "reason": t.reason}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m drover", description=__doc__.split("\n")[0])
    ap.add_argument("--server")
    ap.add_argument("--token-file")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("submit", help="submit a task")
    s.add_argument("type")
    s.add_argument("payload", nargs="?", help="a JSON value (text that is not JSON is sent "
                   "as a JSON string)")
    s.add_argument("--priority", default="normal")
    s.add_argument("--wait", action="store_true", help="wait for the end, print the task")
    for name in ("get", "wait", "cancel"):
        p = sub.add_parser(name, help=f"{name} a task")
        p.add_argument("id", type=int)
        if name == "wait":
            p.add_argument("--timeout", type=float)
    sub.add_parser("stats", help="the server's counters")
    a = ap.parse_args(argv)
    try:
        with Client(a.server, token_file=a.token_file) as c:
            if a.cmd == "submit":
                payload: Any = None
                if a.payload is not None:
                    try:
                        payload = json.loads(a.payload)
                    except ValueError:
                        payload = a.payload
                t = c.submit(a.type, payload, priority=a.priority)
                out: Any = _task_json(c.wait(t) if a.wait else t)
            elif a.cmd == "get":
                out = _task_json(c.get(a.id))
            elif a.cmd == "wait":
                out = _task_json(c.wait(a.id, timeout=a.timeout))
            elif a.cmd == "cancel":
                out = _task_json(c.cancel(a.id))
            else:
                out = c.stats()
    except WaitTimeout as e:
        print(f"drover: {e}", file=sys.stderr)
        return 2
    except (DroverError, ValueError, OSError) as e:
        print(f"drover: {e}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
