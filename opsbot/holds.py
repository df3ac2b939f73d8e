"""A seam for tests of several replicas: hold this process's first command until the test lets it go.

Why: "Slack retried while the first replica was still planning" must be reproducible without timed
sleeps. With OPSBOT_HOLD_FIRST_COMMAND set to the path of a FIFO, the first command of the process
opens it for reading, which blocks until the test opens it for writing (the test knows the command
is waiting because that open succeeds), and carries on when the test closes it (end of file).
Unset, this is one dictionary lookup.
"""

from __future__ import annotations

import os
import threading

ENV = "OPSBOT_HOLD_FIRST_COMMAND"

_done = False
_guard = threading.Lock()


def hold_first_command() -> None:
    global _done
    path = os.environ.get(ENV, "")
    if not path:
        return
    with _guard:
        if _done:
            return
        _done = True
    with open(path, "rb") as fifo:  # blocks until the test opens the other end
        fifo.read()  # blocks until the test closes it
