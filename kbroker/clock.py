"""The broker's one clock: wall-clock milliseconds that advance with trio's clock.

Coordinator deadlines, retention and every timestamp the broker stamps are read from one
`Clock`, and its timers sleep with trio, so a test run under
`trio.testing.MockClock(autojump_threshold=0)` drives all of them without waiting.
The clock is anchored to the wall clock when first read inside `trio.run`; `keep_in_step`
re-anchors it once a second in a running broker, so a suspended laptop or a wall-clock step
reaches the broker's timestamps (as they reach Kafka's) within a second.
"""

from __future__ import annotations

from typing import Callable

import trio

from kbroker.log.clock import wall_clock_ms

RESYNC_INTERVAL_S = 1.0
TOLERANCE_MS = 10  # drift smaller than this is left alone, so time does not jitter backwards


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
            if abs(wall_clock_ms() - self.now_ms()) >= TOLERANCE_MS:
                self.anchor()


class DeadlineSleeper:
    """A coordinator's timer task sleeps here until its earliest deadline, and is woken early
    when a nearer deadline appears. `next_deadline` gives that earliest deadline (None: none),
    in the milliseconds of `clock`."""

    def __init__(self, clock: Callable[[], int], next_deadline: Callable[[], int | None]) -> None:
        self._clock = clock
        self._next_deadline = next_deadline
        self._changed = trio.Event()
        self._sleeping_until: int | None = None  # the deadline the task sleeps for

    def wake(self, deadline: int | None = None) -> None:
        """Wake the sleeper if `deadline` (by default the earliest now) comes before its own."""
        if deadline is None:
            deadline = self._next_deadline()
        if deadline is not None and (self._sleeping_until is None or deadline < self._sleeping_until):
            self._changed.set()

    async def sleep(self) -> None:
        """Until the earliest deadline has passed, or wake() found a nearer one."""
        self._changed = trio.Event()
        self._sleeping_until = deadline = self._next_deadline()
        wait_s = float("inf") if deadline is None else max(deadline - self._clock(), 0) / 1000
        with trio.move_on_after(wait_s):
            await self._changed.wait()
        self._sleeping_until = None
