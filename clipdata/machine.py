"""Facts about the machine that several layers size their work by."""
from __future__ import annotations

import os


def default_workers() -> int:
    """The CPUs this process may run on (its affinity mask, as containers set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
