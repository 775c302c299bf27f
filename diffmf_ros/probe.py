"""A test camera rig on the other side of DDS: publishes thermal/visible pairs (and /clock), collects
what the fusion node sends back (fused images, diagnostics).

The node's tests and the latency benchmark (bench/node_latency.py) drive the node through it,
so both exercise the real publish -> DDS -> node -> DDS -> subscriber path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Log
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image

from .image_conversion import encode_compressed, numpy_to_image_fields
from .node import ns_to_stamp

__all__ = ["BackgroundNode", "FusionProbe", "NodeProcess", "Received", "synthetic_pair"]


def synthetic_pair(height: int, width: int, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 16-bit thermal frame (a warm target moving over a cool background) and a dim RGB visible frame."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = (0.2 + 0.6 * ((index * 0.05) % 1.0)) * width
    blob = np.exp(-(((xx - cx) / (0.08 * width)) ** 2 + ((yy - height / 2) / (0.15 * height)) ** 2))
    thermal = (29000 + 600 * yy / height + 2500 * blob).astype(np.uint16)
    visible = np.stack([40 + 60 * xx / width, 30 + 50 * yy / height, 50 + 0 * xx], axis=-1)
    visible[(yy > 0.6 * height) & (np.abs(xx - cx) < 0.05 * width)] = (90, 80, 70)
    return thermal, visible.astype(np.uint8)


def _qos(depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


@dataclass(frozen=True)
class Received:
    msg: Image
    wall_ns: int  # time.time_ns() on arrival, for latency against wall-clock stamps


class FusionProbe:
    """Publishers for both cameras (+ /clock), subscribers for the fused topic and /diagnostics.

    Spins its own node on its own executor thread; every ``wait_*`` is event-driven with a timeout.
    """

    def __init__(
        self,
        name: str = "diffmf_probe",
        thermal_topic: str = "thermal/image_raw",
        visible_topic: str = "visible/image_raw",
        fused_topic: str = "fused/image_raw",
        thermal_compressed: bool = False,
        visible_compressed: bool = False,
        depth: int = 50,
        keep_images: bool = True,
        context: Any = None,
    ) -> None:
        self.node = Node(name, context=context)
        self.compressed = {"thermal": thermal_compressed, "visible": visible_compressed}
        self.publishers = {
            "thermal": self._camera_pub(thermal_topic, thermal_compressed, depth),
            "visible": self._camera_pub(visible_topic, visible_compressed, depth),
        }
        self.clock_pub = self.node.create_publisher(Clock, "/clock", 10)
        self.keep_images = keep_images
        self.fused: list[Received] = []
        self.fused_count = 0
        self.diagnostics: list[dict[str, Any]] = []
        self.logs: list[Log] = []
        self._cond = threading.Condition()
        self.node.create_subscription(Image, fused_topic, self._on_fused, _qos(depth))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        # /rosout keeps recent history (transient local), so logs from before we joined arrive too.
        rosout_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(Log, "/rosout", self._on_log, rosout_qos)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name="diffmf-probe", daemon=True)
        self._thread.start()

    def _camera_pub(self, topic: str, compressed: bool, depth: int) -> Any:
        if compressed:
            return self.node.create_publisher(CompressedImage, f"{topic.rstrip('/')}/compressed", _qos(depth))
        return self.node.create_publisher(Image, topic, _qos(depth))

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # the context shut down under us: the probe is being closed
            return

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()
        self._thread.join(timeout=5)

    # -- publishing -----------------------------------------------------------------------
    def make_msg(self, stream: str, pixels: np.ndarray, stamp_ns: int, encoding: str | None = None,
                 frame_id: str | None = None, fmt: str = "png") -> Image | CompressedImage:
        """A message for ``stream`` in the form its publisher carries (raw in ``encoding``, or compressed)."""
        if self.compressed[stream]:
            msg = CompressedImage(**encode_compressed(pixels, fmt, as_bytes=True))
        else:
            if encoding is None:
                encoding = {np.dtype(np.uint16): "mono16", np.dtype(np.float32): "32FC1"}.get(pixels.dtype, "mono8")
                encoding = "bgr8" if pixels.ndim == 3 else encoding
            msg = Image(**numpy_to_image_fields(pixels, encoding, as_bytes=True))
        msg.header.stamp = ns_to_stamp(stamp_ns)
        msg.header.frame_id = frame_id if frame_id is not None else f"{stream}_optical_frame"
        return msg

    def publish(self, stream: str, msg: Any) -> None:
        self.publishers[stream].publish(msg)

    def publish_pair(self, thermal: np.ndarray, visible: np.ndarray, stamp_ns: int, skew_ns: int = 0) -> None:
        """Thermal stamped ``stamp_ns + skew_ns``, visible stamped ``stamp_ns``."""
        self.publish("thermal", self.make_msg("thermal", thermal, stamp_ns + skew_ns))
        self.publish("visible", self.make_msg("visible", visible, stamp_ns))

    def publish_clock(self, ns: int) -> None:
        msg = Clock()
        msg.clock = ns_to_stamp(ns)
        self.clock_pub.publish(msg)

    # -- receiving ------------------------------------------------------------------------
    def _on_fused(self, msg: Image) -> None:
        with self._cond:
            self.fused_count += 1
            self.fused.append(Received(msg if self.keep_images else _header_only(msg), time.time_ns()))
            self._cond.notify_all()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if not status.name.endswith(": fusion"):
                continue
            values: dict[str, Any] = {kv.key: kv.value for kv in status.values}
            values["level"] = status.level[0] if isinstance(status.level, bytes) else int(status.level)
            values["message"] = status.message
            with self._cond:
                self.diagnostics.append(values)
                self._cond.notify_all()

    def _on_log(self, msg: Log) -> None:
        with self._cond:
            self.logs.append(msg)
            self._cond.notify_all()

    def log_lines(self, node_name: str, contains: str, level: int | None = None) -> list[str]:
        """Messages that ``node_name`` logged containing ``contains`` (optionally at one level, e.g. Log.WARN)."""
        with self._cond:
            return [
                m.msg for m in self.logs
                if m.name.endswith(node_name) and contains in m.msg and (level is None or m.level == level)
            ]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` (checked under the probe's lock on every arrival) or ``timeout``."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_for_fused(self, count: int, timeout: float) -> bool:
        return self.wait_for(lambda: self.fused_count >= count, timeout)

    def wait_for_diagnostics(self, predicate: Callable[[dict], bool], timeout: float) -> dict | None:
        """The first diagnostics message from now on that satisfies ``predicate``, or None after ``timeout``."""
        with self._cond:
            start = len(self.diagnostics)

            def match() -> dict | None:
                return next((d for d in self.diagnostics[start:] if predicate(d)), None)

            self._cond.wait_for(lambda: match() is not None, timeout)
            return match()

    def wait_for_subscribers(self, timeout: float, streams: tuple[str, ...] = ("thermal", "visible")) -> bool:
        """True once the node subscribes to our camera topics (it does so only when its model is ready)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.publishers[s].get_subscription_count() > 0 for s in streams):
                return True
            time.sleep(0.05)
        return False


def _header_only(msg: Image) -> Image:
    light = Image()
    light.header = msg.header
    light.height, light.width, light.encoding, light.step = msg.height, msg.width, msg.encoding, msg.step
    return light


class BackgroundNode:
    """A node spinning on its own executor thread in this process (DDS still sits between it and the probe)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self._thread = threading.Thread(target=self._spin, name=f"spin-{node.get_name()}", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # shut down under us
            return

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self._thread.join(timeout=5)
        self.node.destroy_node()


class NodeProcess:
    """``python -m diffmf_ros.node`` in a child process (same DDS domain, localhost-only), with its output kept."""

    def __init__(self, params_files: list[str], overrides: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, name: str | None = None) -> None:
        import os
        import subprocess
        import sys

        args = [sys.executable, "-m", "diffmf_ros.node", "--ros-args"]
        for path in params_files:
            args += ["--params-file", str(path)]
        for key, value in (overrides or {}).items():
            args += ["-p", f"{key}:={_ros_arg(value)}"]
        if name:
            args += ["-r", f"__node:={name}"]
        child_env = dict(os.environ)
        child_env.update(env or {})
        child_env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        child_env["PYTHONUNBUFFERED"] = "1"
        self.args = args
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT (a clean rclpy shutdown), then kill if it hangs; returns the exit code."""
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return self.process.returncode

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output[-lines:])


def _ros_arg(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_ros_arg(v) for v in value) + "]"
    return repr(value)
