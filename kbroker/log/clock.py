"""The wall clock, in the milliseconds since the epoch Kafka's timestamps use.

The log layer's default time source; a running broker hands its trio-derived `kbroker.clock.Clock`
to everything instead, so that tests can drive time.
"""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000
