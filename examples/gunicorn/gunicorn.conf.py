"""gunicorn settings for ``app.py`` under prometheus_client's multiprocess mode.

``gunicorn -c examples/gunicorn/gunicorn.conf.py ...`` with ``PROMETHEUS_MULTIPROC_DIR``
pointing at an empty directory (wipe it before every start). Every worker writes its series
there; counters and histograms stay after a worker exits, so totals never go down across
worker restarts; a dead worker's ``live*`` gauges are removed here, once gunicorn reaped it.
Without the variable these hooks do nothing.
"""

from __future__ import annotations

import os
from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    """In the master, after a worker exited: drop its live gauges (its counters stay)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
        server.log.info("metrics: worker %s exited, its live gauges removed", worker.pid)
