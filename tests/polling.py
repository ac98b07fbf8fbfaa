"""Polling with a deadline, for tests that wait on brokers and clients running elsewhere."""

from __future__ import annotations

import time


def wait_for(condition, timeout_s: float = 30.0, what: str = "condition", interval_s: float = 0.05):
    """Poll `condition` until it returns something truthy and return that; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)
