"""diffmf_play: publish a bag's image topics with their recorded timing, and /clock, over ROS 2.

``ros2 bag`` cannot be pip-installed; this small player (rosbags + rclpy) stands in for
``ros2 bag play --clock`` so the node can run unchanged with ``use_sim_time``:

    diffmf_play drive_bag --clock --rate 0.5 --loop
    diffmf_node --ros-args --params-file config/diffmf.yaml -p use_sim_time:=true

Messages are published exactly as recorded (the raw CDR bytes, no re-encoding), each at
its log time scaled by ``--rate``. With ``--clock``, /clock carries the bag time: before
every message and at ``--clock-hz`` in between, so the node's max-age check and timers
follow the bag. A looping bag starts again at its first message; the clock jumps back,
which the node notices and answers by resetting its queues. Remap topics the ROS way:
``diffmf_play BAG --ros-args -r /cam/ir:=/thermal/image_raw``.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .bag_io import IMAGE_TYPES, NS_PER_S, BagError, BagReader

__all__ = ["BagPlayer", "PlaybackStats", "main"]

EXIT_BAD_BAG = 2


@dataclass
class PlaybackStats:
    published: collections.Counter = field(default_factory=collections.Counter)
    clock_ticks: int = 0
    loops: int = 0  # completed passes through the bag
    wall_s: float = 0.0

    def line(self) -> str:
        topics = ", ".join(f"{t} {n}" for t, n in sorted(self.published.items())) or "nothing"
        return (f"published {topics} in {self.wall_s:.1f} s ({self.loops} pass{'es' if self.loops != 1 else ''}),"
                f" /clock ticks {self.clock_ticks}")


def message_class(msgtype: str) -> type:
    """rclpy's Python class for ``pkg/msg/Name`` (the package must be installed)."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class BagPlayer:
    """Publishes a bag on an rclpy node; ``play()`` blocks until the bag ends (or ``stop()``)."""

    def __init__(self, node: Any, bag: str | os.PathLike, rate: float = 1.0, loop: bool = False,
                 clock: bool = False, clock_hz: float = 40.0, topics: Sequence[str] | None = None,
                 reliability: str = "reliable", depth: int = 10) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if clock and not clock_hz > 0:
            raise ValueError(f"clock_hz must be > 0, got {clock_hz}")
        self.node, self.rate, self.loop = node, float(rate), loop
        self.clock_period = 1.0 / clock_hz if clock else None
        self.bag = BagReader(bag)
        self.bag.open()
        try:
            self.connections = self._pick(topics)
        except BagError:
            self.bag.close()
            raise
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
            reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        )
        self.publishers = {}
        for conn in self.connections:
            if conn.topic not in self.publishers:
                self.publishers[conn.topic] = node.create_publisher(message_class(conn.msgtype), conn.topic, qos)
        self.clock_pub = None
        if clock:
            from rosgraph_msgs.msg import Clock

            # rclcpp's ClockQoS: best effort, newest only; matches every /clock subscriber.
            clock_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                   reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
            self.clock_pub = node.create_publisher(Clock, "/clock", clock_qos)
            self._clock_msg = Clock()
        self._stop = threading.Event()
        self.stats = PlaybackStats()

    def _pick(self, topics: Sequence[str] | None) -> list:
        if topics:
            chosen = []
            for topic in topics:
                first = self.bag.connection(topic, IMAGE_TYPES)
                chosen += [c for c in self.bag.connections_of(first.topic) if c not in chosen]
            return chosen
        chosen = [c for c in self.bag.reader.connections if c.msgtype in IMAGE_TYPES]
        if not chosen:
            raise BagError(self.bag.path, "has no sensor_msgs Image or CompressedImage topics to play")
        return chosen

    @property
    def topics(self) -> list[str]:
        return list(self.publishers)

    def wait_for_subscribers(self, timeout: float, settle: float = 0.5) -> bool:
        """Wait until every topic (and /clock) has a subscriber (or ``timeout`` s); True if they all do.

        DDS discovery is two-sided: our writer may see a reader before that reader has matched
        our writer, and frames sent in between are lost; ``settle`` seconds cover that gap.
        """
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            publishers = [*self.publishers.values(), *([self.clock_pub] if self.clock_pub is not None else [])]
            if all(pub.get_subscription_count() > 0 for pub in publishers):
                return not self._stop.wait(settle)
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        for pub in self.publishers.values():
            self.node.destroy_publisher(pub)
        if self.clock_pub is not None:
            self.node.destroy_publisher(self.clock_pub)
        self.publishers, self.clock_pub = {}, None
        self.bag.close()

    def play(self, on_publish: Callable[[str, int, float], None] | None = None,
             progress: bool | None = False, gate: Callable[[str, int], None] | None = None) -> PlaybackStats:
        """Publish the bag (again and again with ``loop``); ``on_publish(topic, log_ns, wall_time)`` after each.

        ``gate(topic, log_ns)``, if given, is called before each message and may block: playback
        (and /clock) pauses meanwhile and resumes with the recorded spacing, like pausing
        ``ros2 bag play``. The demo uses it to let a slow CPU model finish each frame.
        Raises BagError if the bag turns out to be corrupt part-way (what was published stays published).
        """
        started = time.monotonic()
        total = sum(c.msgcount for c in self.connections)
        with tqdm(total=total, unit="msg", desc="diffmf_play", dynamic_ncols=True,
                  disable=None if progress is None else not progress) as bar:
            while not self._stop.is_set():
                bar.reset(total)
                self._play_once(bar, on_publish, gate)
                if self._stop.is_set() or not self.loop:
                    break
                self.stats.loops += 1
        if not self._stop.is_set():
            self.stats.loops += 1
        self.stats.wall_s = time.monotonic() - started
        return self.stats

    def _play_once(self, bar: tqdm, on_publish: Callable[[str, int, float], None] | None,
                   gate: Callable[[str, int], None] | None) -> None:
        bag_start = self.bag.start_ns
        wall_start = time.monotonic()
        for conn, log_ns, raw in self.bag.messages(self.connections):
            if gate is not None:
                paused = time.monotonic()
                gate(conn.topic, log_ns)
                if self._stop.is_set():
                    return
                # Resume with the recorded spacing, but never owe time from before the pause.
                wall_start += max(0.0, time.monotonic() - max(paused, wall_start + (log_ns - bag_start) / NS_PER_S
                                                              / self.rate))
            due = wall_start + (log_ns - bag_start) / NS_PER_S / self.rate
            if not self._sleep_until(due, bag_start, wall_start):
                return
            self._tick(log_ns)
            self.publishers[conn.topic].publish(raw)
            self.stats.published[conn.topic] += 1
            bar.update(1)
            if on_publish is not None:
                on_publish(conn.topic, log_ns, time.time())

    def _sleep_until(self, due: float, bag_start: int, wall_start: float) -> bool:
        """Sleep until ``due`` (monotonic), ticking /clock on the way; False if stopped."""
        while True:
            now = time.monotonic()
            if now >= due:
                return not self._stop.is_set()
            step = due - now if self.clock_period is None else min(due - now, self.clock_period)
            if self._stop.wait(step):
                return False
            if self.clock_period is not None and time.monotonic() < due:
                self._tick(bag_start + int((time.monotonic() - wall_start) * self.rate * NS_PER_S))

    def _tick(self, bag_ns: int) -> None:
        if self.clock_pub is None:
            return
        self._clock_msg.clock.sec, self._clock_msg.clock.nanosec = divmod(int(bag_ns), NS_PER_S)
        self.clock_pub.publish(self._clock_msg)
        self.stats.clock_ticks += 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffmf_play",
        description="Publish a ROS 2 bag's image topics with their recorded timing (a stand-in for"
        " `ros2 bag play`); ROS arguments go after --ros-args.",
    )
    p.add_argument("bag", metavar="BAG", help="rosbag2 folder, or a single .db3/.mcap file")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="start again at the end, until Ctrl-C")
    p.add_argument("--clock", action="store_true", help="publish /clock with the bag time (for use_sim_time)")
    p.add_argument("--clock-hz", type=float, default=40.0, help="/clock rate between messages (default 40)")
    p.add_argument("--topics", nargs="+", metavar="TOPIC", help="play only these image topics (default: all)")
    p.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable",
                   help="publisher QoS reliability (default reliable: matches both kinds of subscriber)")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS for a subscriber on every topic before playing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import rclpy
    from rclpy.utilities import remove_ros_args

    full = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(remove_ros_args(["diffmf_play", *full])[1:])
    if not args.rate > 0 or not args.clock_hz > 0:
        print("diffmf_play: error: --rate and --clock-hz must be > 0", file=sys.stderr)
        return EXIT_BAD_BAG
    if not Path(args.bag).exists():
        print(f"diffmf_play: error: {args.bag}: no such bag", file=sys.stderr)
        return EXIT_BAD_BAG
    rclpy.init(args=["diffmf_play", *full])
    node = rclpy.create_node("diffmf_player")
    player = None
    try:
        player = BagPlayer(node, args.bag, rate=args.rate, loop=args.loop, clock=args.clock,
                           clock_hz=args.clock_hz, topics=args.topics, reliability=args.reliability)
        print(f"diffmf_play: {args.bag}: {', '.join(player.topics)}" + (" + /clock" if args.clock else ""),
              file=sys.stderr)
        if args.wait_for_subscribers > 0 and not player.wait_for_subscribers(args.wait_for_subscribers):
            print("diffmf_play: not every topic has a subscriber yet; playing anyway", file=sys.stderr)
        stats = player.play(progress=False if args.no_progress else None)
        print(f"diffmf_play: {stats.line()}")
        return 0
    except BagError as exc:
        print(f"diffmf_play: error: {exc}", file=sys.stderr)
        return EXIT_BAD_BAG
    except KeyboardInterrupt:
        if player is not None:
            print(f"diffmf_play: stopped; {player.stats.line()}")
        return 0
    finally:
        if player is not None:
            player.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
