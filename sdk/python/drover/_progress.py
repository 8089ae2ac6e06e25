"""A one-line progress bar for workflows on a terminal (stderr)."""

from __future__ import annotations

import sys
from typing import Optional, TextIO

from .types import Workflow


class Progress:
    """Draws ``[#####.....] 5/10 done (4 ok, 1 failed)`` in place; silent off a terminal
    unless forced."""

    def __init__(self, enabled: Optional[bool] = None, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.enabled = out.isatty() if enabled is None else enabled
        self._last = ""

    def show(self, w: Workflow) -> None:
        if not self.enabled:
            return
        r = w.raw
        width = 30
        filled = int(width * r.done / r.total) if r.total else 0
        line = (f"workflow {r.id} [{'#' * filled}{'.' * (width - filled)}] {r.done}/{r.total} "
                f"done ({r.succeeded} ok, {r.failed} failed, {r.canceled} canceled)")
        if line != self._last:
            self.out.write("\r" + line)
            self.out.flush()
            self._last = line

    def end(self) -> None:
        if self.enabled and self._last:
            self.out.write("\n")
            self.out.flush()
