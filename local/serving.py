"""Run a local test server (the Neon API double, the Neon MCP double) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterable


def serve_until_stopped(
    start: Callable[[], str], stop: Callable[[], None], banner: str, problems: Callable[[], Iterable[str]]
) -> int:
    """``banner`` is formatted with ``url``; after stopping, what ``problems`` lists goes to stderr."""
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    url = start()
    print(banner.format(url=url), flush=True)
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        for problem in problems():
            print(problem, file=sys.stderr)
    return 0
