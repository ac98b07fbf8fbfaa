"""Keyed deadlines for the coordinators' sans-IO state machines.

Scheduling a key again replaces its deadline (Kafka's coordinator timer works the same way), so
a member's session deadline is simply rescheduled on every heartbeat. Replaced and cancelled
entries stay in the heap and are skipped when they reach its top.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Callable, Hashable


class Timers:
    """Deadlines (ms on the caller's clock) with one action each, fired in deadline order."""

    def __init__(self):
        self._live: dict[Hashable, tuple[int, int, Callable[[int], None]]] = {}
        self._heap: list[tuple[int, int, Hashable]] = []
        self._sequence = itertools.count()

    def schedule(self, key: Hashable, deadline_ms: int, action: Callable[[int], None]) -> None:
        """Run `action(now_ms)` once `deadline_ms` has passed, replacing any deadline of `key`."""
        sequence = next(self._sequence)
        self._live[key] = (deadline_ms, sequence, action)
        heapq.heappush(self._heap, (deadline_ms, sequence, key))

    def scheduled(self, key: Hashable) -> bool:
        return key in self._live

    def cancel(self, key: Hashable) -> None:
        self._live.pop(key, None)

    def next_deadline(self) -> int | None:
        heap = self._heap
        while heap:
            deadline, sequence, key = heap[0]
            entry = self._live.get(key)
            if entry is not None and entry[1] == sequence:
                return deadline
            heapq.heappop(heap)
        return None

    def pop_due(self, now_ms: int) -> tuple[int, Callable[[int], None]] | None:
        """(deadline, action) of the earliest deadline at or before now_ms (removed), or None.

        The action is meant to run as of its deadline, so a late caller still keeps every
        later deadline it schedules exact.
        """
        deadline = self.next_deadline()
        if deadline is None or deadline > now_ms:
            return None
        _, _, key = heapq.heappop(self._heap)
        return deadline, self._live.pop(key)[2]
