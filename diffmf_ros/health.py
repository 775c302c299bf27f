"""What the node knows about its own health: rates, latencies, drops by reason, silent cameras. ROS-free.

The node feeds it from the subscription callbacks and the inference worker (it is
thread-safe) and turns :meth:`HealthMonitor.snapshot` into a DiagnosticArray and a
one-line log summary.
"""

from __future__ import annotations

import collections
import resource
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["CameraEvent", "HealthMonitor", "LatencyWindow", "RateMeter"]

OK, WARN, ERROR = 0, 1, 2

TIMINGS = ("inference", "overhead", "latency", "callback", "prepare", "publish")

# Drops that are the real-time policy working as intended (not bad input).
POLICY_DROPS = frozenset({"superseded", "unpaired", "stale", "out_of_order", "clock_jump", "duplicate_stamp"})
# lost_in_transport (DDS lost a frame before delivery) is neither: it raises a WARN like bad input.


class RateMeter:
    """Events per second over the last ``window`` seconds."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        return len(self._times) / self.window

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()


class LatencyWindow:
    """The last ``size`` durations in milliseconds, for p50/p99."""

    def __init__(self, size: int = 300) -> None:
        self._values: collections.deque[float] = collections.deque(maxlen=size)

    def add(self, milliseconds: float) -> None:
        self._values.append(milliseconds)

    def percentile(self, q: float) -> float:
        """NaN while empty."""
        return float(np.percentile(self._values, q)) if self._values else float("nan")

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class CameraEvent:
    """A camera fell silent (``lost=True``) or came back; ``silent_for`` in seconds."""

    stream: str
    lost: bool
    silent_for: float


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class HealthMonitor:
    """Counters and windows shared by callbacks, worker and timers (one lock, held briefly)."""

    def __init__(self, streams: tuple[str, ...], camera_timeout: float, window: int = 300,
                 clock=time.monotonic) -> None:
        self.streams = streams
        self.camera_timeout = camera_timeout
        self._clock = clock
        self._lock = threading.Lock()
        started = clock()
        self._last_seen = {s: started for s in streams}
        self._lost = dict.fromkeys(streams, False)
        self._input_rates = {s: RateMeter() for s in streams}
        self._output_rate = RateMeter()
        self.received = collections.Counter()
        self.drops: collections.Counter[str] = collections.Counter()
        self._drops_at_last_report: collections.Counter[str] = collections.Counter()
        self.fused = 0
        self.passed_through = 0
        # inference: the model; overhead: everything else the node spends on a published frame
        # (conversion of both inputs, prepare = normalise + register, publish = encode + send);
        # callback: a whole subscription callback (conversion + pairing); latency: stamp -> publish.
        self.timings = {name: LatencyWindow(window) for name in TIMINGS}
        self.pending: dict[str, int] = {}
        self.pending_peak = 0

    # -- fed by the node ------------------------------------------------------------------
    def frame_arrived(self, stream: str) -> None:
        now = self._clock()
        with self._lock:
            self._last_seen[stream] = now
            self._input_rates[stream].tick(now)
            self.received[stream] += 1

    def dropped(self, reason: str, count: int = 1) -> None:
        if count > 0:
            with self._lock:
                self.drops[reason] += count

    def add_drops(self, counts: collections.Counter) -> None:
        """Merge counts kept elsewhere (the pairer's), given as increments."""
        with self._lock:
            self.drops.update({k: v for k, v in counts.items() if v > 0})

    def queues(self, lengths: dict[str, int], slot: int) -> None:
        with self._lock:
            self.pending = dict(lengths, slot=slot)
            self.pending_peak = max(self.pending_peak, *lengths.values(), slot)

    def timed(self, name: str, milliseconds: float) -> None:
        with self._lock:
            self.timings[name].add(milliseconds)

    def published(self, fused: bool, **milliseconds: float) -> None:
        """One output frame (fused, or passed through) and its timings by name (see TIMINGS)."""
        with self._lock:
            self._output_rate.tick(self._clock())
            if fused:
                self.fused += 1
            else:
                self.passed_through += 1
            for name, value in milliseconds.items():
                self.timings[name].add(value)

    # -- read by the node -----------------------------------------------------------------
    def is_lost(self, stream: str) -> bool:
        with self._lock:
            return self._clock() - self._last_seen[stream] > self.camera_timeout

    def camera_events(self) -> list[CameraEvent]:
        """Transitions since the last call: each loss and each recovery is reported once."""
        now = self._clock()
        events = []
        with self._lock:
            for stream in self.streams:
                silent_for = now - self._last_seen[stream]
                lost = silent_for > self.camera_timeout
                if lost != self._lost[stream]:
                    self._lost[stream] = lost
                    events.append(CameraEvent(stream, lost, silent_for))
        return events

    def snapshot(self, consume: bool = True) -> dict:
        """Everything diagnostics and the log summary show, plus ``level`` (0 OK, 1 WARN, 2 ERROR).

        The level is WARN while bad input was dropped since the last consuming snapshot
        (diagnostics consume; the log summary only looks).
        """
        now = self._clock()
        with self._lock:
            lost = [s for s in self.streams if now - self._last_seen[s] > self.camera_timeout]
            new_drops = self.drops - self._drops_at_last_report
            if consume:
                self._drops_at_last_report = collections.Counter(self.drops)
            bad_input = sorted(r for r in new_drops if r not in POLICY_DROPS)
            level, message = OK, "fusing"
            if bad_input:
                level, message = WARN, "dropping bad input: " + ", ".join(bad_input)
            if lost:
                level, message = ERROR, "no frames from " + " and ".join(lost)
            return {
                "level": level,
                "message": message,
                "lost": lost,
                "input_hz": {s: self._input_rates[s].rate(now) for s in self.streams},
                "output_hz": self._output_rate.rate(now),
                "received": dict(self.received),
                "fused": self.fused,
                "passed_through": self.passed_through,
                "drops": dict(self.drops),
                **{f"{name}_ms": (w.percentile(50), w.percentile(99)) for name, w in self.timings.items()},
                "pending": dict(self.pending),
                "pending_peak": self.pending_peak,
                "peak_rss_mb": peak_rss_mb(),
            }
