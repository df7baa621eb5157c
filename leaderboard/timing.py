"""How long each stage of a ratings recompute took, logged at INFO.

`benchmarks/recompute.py` reads these lines ("recompute stage NAME: SECONDS s") from a real
`recompute_ratings` run to show where its time goes.
"""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Log how long the block took as one stage of the recompute."""
    started = time.perf_counter()
    try:
        yield
    finally:
        log.info("recompute stage %s: %.3f s", name, time.perf_counter() - started)
