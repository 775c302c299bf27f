"""Pairing thermal and visible frames by timestamp, and the real-time policy around it. ROS-free.

The node and the offline bag tool (``diffmf_bag``) share this code, so a bag fused
offline pairs exactly like a live run.

Pairing: :class:`ApproximateTimePairer`
    message_filters' ApproximateTimeSynchronizer semantics for two streams: each stream
    keeps its newest ``queue_size`` frames; a new frame is paired with the frame of the
    other stream closest to it in time, if that one is within ``slop`` seconds (inclusive).
    Both frames leave their queues. Two differences, both for real time: pairs come out
    in time order (frames older than the last pair of their stream can no longer pair and
    are dropped), and every frame that never pairs is counted in ``drops`` by reason
    instead of vanishing silently. Nothing is called back under a lock: ``push`` returns
    the pairs it made.

        pairer = ApproximateTimePairer(slop=0.02, queue_size=5, reference="visible")
        for stream, stamp_ns, frame in frames:        # stream is "thermal" or "visible"
            for pair in pairer.push(stream, stamp_ns, frame):
                fuse(pair.ir, pair.vi)                 # pair.stamp_ns: the reference stamp
        pairer.finish()                                # frames left unpaired -> drops
        print(dict(pairer.drops))

    Drop reasons counted by the pairer: ``unpaired`` (pushed out of a full queue, or
    overtaken by a newer pair), ``out_of_order`` (older than the stream's last pair),
    ``duplicate_stamp`` (a stream repeated a stamp; the newer frame is kept), and the
    reason given to :meth:`ApproximateTimePairer.reset` for what a reset threw away.

Real-time helpers for the node:
    :class:`LatestSlot` -- a one-slot mailbox between the subscription callbacks and the
    inference worker; a newer pair replaces (and returns) the waiting one.
    :func:`is_stale` -- the ``max_age`` check against the node's clock ("now").
    :class:`ClockJumpDetector` -- notices the clock going backwards (a looping bag under
    ``use_sim_time``), upon which the node calls ``reset``.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = [
    "STREAMS",
    "ApproximateTimePairer",
    "ClockJumpDetector",
    "LatestSlot",
    "Pair",
    "is_stale",
]

THERMAL = "thermal"
VISIBLE = "visible"
STREAMS = (THERMAL, VISIBLE)
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Pair:
    """A thermal frame and a visible frame taken close enough in time to fuse."""

    ir: Any
    vi: Any
    ir_stamp_ns: int
    vi_stamp_ns: int
    stamp_ns: int  # the reference stream's stamp: what the fused image is stamped with

    @property
    def skew_ns(self) -> int:
        """Visible stamp minus thermal stamp."""
        return self.vi_stamp_ns - self.ir_stamp_ns


class ApproximateTimePairer:
    """Approximate-time pairing of the ``thermal`` and ``visible`` streams (see module docstring)."""

    def __init__(self, slop: float, queue_size: int, reference: str = VISIBLE) -> None:
        if not slop >= 0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop}")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if reference not in STREAMS:
            raise ValueError(f"reference must be one of {STREAMS}, got '{reference}'")
        self.slop_ns = int(round(slop * NS_PER_S))
        self.queue_size = int(queue_size)
        self.reference = reference
        self.drops: collections.Counter[str] = collections.Counter()
        self.pairs_made = 0
        self._queues: dict[str, dict[int, Any]] = {s: {} for s in STREAMS}
        self._last_paired: dict[str, int | None] = {s: None for s in STREAMS}
        self._lock = threading.Lock()

    def push(self, stream: str, stamp_ns: int, payload: Any) -> list[Pair]:
        """Add one frame; return the pair it completed (a list of zero or one ``Pair``)."""
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}, got '{stream}'")
        stamp_ns = int(stamp_ns)
        other = VISIBLE if stream == THERMAL else THERMAL
        with self._lock:
            last = self._last_paired[stream]
            if last is not None and stamp_ns <= last:
                self.drops["out_of_order"] += 1
                return []
            queue = self._queues[stream]
            if stamp_ns in queue:
                self.drops["duplicate_stamp"] += 1
            queue[stamp_ns] = payload
            while len(queue) > self.queue_size:
                del queue[min(queue)]
                self.drops["unpaired"] += 1
            match = self._closest(self._queues[other], stamp_ns)
            if match is None:
                return []
            partner = self._queues[other].pop(match)
            pair = self._make_pair(stream, stamp_ns, queue.pop(stamp_ns), match, partner)
            for name, paired_at in ((stream, stamp_ns), (other, match)):
                self._last_paired[name] = paired_at
                self._discard_older(name, paired_at)
            self.pairs_made += 1
            return [pair]

    def _closest(self, queue: dict[int, Any], stamp_ns: int) -> int | None:
        best = None
        for candidate in queue:
            gap = abs(candidate - stamp_ns)
            if gap <= self.slop_ns and (best is None or gap < abs(best - stamp_ns)):
                best = candidate
        return best

    def _make_pair(
        self, stream: str, stamp_ns: int, payload: Any, other_stamp: int, other_payload: Any
    ) -> Pair:
        if stream == THERMAL:
            ir, ir_ns, vi, vi_ns = payload, stamp_ns, other_payload, other_stamp
        else:
            ir, ir_ns, vi, vi_ns = other_payload, other_stamp, payload, stamp_ns
        return Pair(ir, vi, ir_ns, vi_ns, ir_ns if self.reference == THERMAL else vi_ns)

    def _discard_older(self, stream: str, stamp_ns: int) -> None:
        queue = self._queues[stream]
        for old in [s for s in queue if s < stamp_ns]:
            del queue[old]
            self.drops["unpaired"] += 1

    def queue_lengths(self) -> dict[str, int]:
        """Frames waiting for a partner, per stream (never more than ``queue_size``)."""
        with self._lock:
            return {s: len(q) for s, q in self._queues.items()}

    def reset(self, reason: str | None = None) -> int:
        """Forget all waiting frames and the time order (e.g. after the clock jumped back).

        Returns how many frames were thrown away; with ``reason`` they are counted as drops.
        """
        with self._lock:
            cleared = sum(len(q) for q in self._queues.values())
            for queue in self._queues.values():
                queue.clear()
            self._last_paired = {s: None for s in STREAMS}
            if reason and cleared:
                self.drops[reason] += cleared
            return cleared

    def finish(self) -> int:
        """End of input: count the frames still waiting as ``unpaired``; returns how many."""
        return self.reset("unpaired")


T = TypeVar("T")


class LatestSlot(Generic[T]):
    """One-slot mailbox: producers never wait, the consumer always gets the newest item.

    ``put`` returns the item it displaced (the caller counts it as dropped), so the
    worker can never fall behind by more than one item.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> T | None:
        with self._cond:
            displaced, self._item = self._item, item
            self._cond.notify()
            return displaced

    def take(self, timeout: float | None = None) -> T | None:
        """The waiting item (emptying the slot), or None after ``timeout`` seconds or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> T | None:
        with self._cond:
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake a waiting ``take`` for shutdown."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return 0 if self._item is None else 1


def is_stale(stamp_ns: int, now_ns: int, max_age: float) -> bool:
    """True when a frame stamped ``stamp_ns`` is older than ``max_age`` seconds at ``now_ns``.

    ``max_age <= 0`` turns the check off. Stamps ahead of ``now`` are not stale (a sim
    clock may lag the images it stamps).
    """
    return max_age > 0 and now_ns - stamp_ns > max_age * NS_PER_S


class ClockJumpDetector:
    """Notices a clock going backwards by more than ``tolerance`` seconds (a bag that loops)."""

    def __init__(self, tolerance: float = 0.0) -> None:
        self.tolerance_ns = int(tolerance * NS_PER_S)
        self._latest: int | None = None
        self.jumps = 0

    def reset(self) -> None:
        """Forget the latest time seen (the next update starts afresh)."""
        self._latest = None

    def update(self, now_ns: int) -> bool:
        """Feed the current time; True when it went backwards since the last call."""
        jumped = self._latest is not None and now_ns < self._latest - self.tolerance_ns
        if jumped:
            self.jumps += 1
            self._latest = now_ns
        else:
            self._latest = now_ns if self._latest is None else max(self._latest, now_ns)
        return jumped
