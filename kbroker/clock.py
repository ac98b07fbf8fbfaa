"""The broker's one clock: wall-clock milliseconds that advance with trio's clock.

Coordinator deadlines, retention and every timestamp the broker stamps are read from one
`Clock`, and its timers sleep with trio, so a test run under
`trio.testing.MockClock(autojump_threshold=0)` drives all of them without waiting.
The clock is anchored to the wall clock when first read inside `trio.run`; `keep_in_step`
re-anchors it once a second in a running broker, so a suspended laptop or a wall-clock step
reaches the broker's timestamps (as they reach Kafka's) within a second.
"""

from __future__ import annotations

import trio

from kbroker.log.clock import wall_clock_ms

RESYNC_INTERVAL_S = 1.0
_TOLERANCE_MS = 10  # drift smaller than this is left alone, so time does not jitter backwards


class Clock:
    """Milliseconds since the epoch; outside trio.run (startup replay) the wall clock."""

    __slots__ = ("_offset_ms",)

    def __init__(self) -> None:
        self._offset_ms: float | None = None  # wall clock minus trio's, in ms

    def now_ms(self) -> int:
        try:
            trio_ms = trio.current_time() * 1000
        except RuntimeError:  # not inside trio.run
            return wall_clock_ms()
        if self._offset_ms is None:
            self._offset_ms = wall_clock_ms() - trio_ms
        return round(trio_ms + self._offset_ms)

    def anchor(self) -> None:
        """Take the offset from the wall clock now (call inside trio.run)."""
        self._offset_ms = wall_clock_ms() - trio.current_time() * 1000

    async def keep_in_step(self) -> None:
        """Follow wall-clock steps (suspend, NTP) in a running broker, until cancelled."""
        self.anchor()
        while True:
            await trio.sleep(RESYNC_INTERVAL_S)
            if abs(wall_clock_ms() - self.now_ms()) >= _TOLERANCE_MS:
                self.anchor()
