"""FusionNode: thermal + visible camera topics in, one fused image topic out, in real time.

The per-frame path, top to bottom:

1. subscription callback (executor thread): convert the message to an array, pair it with
   the other camera (diffmf_ros.sync), put the pair in a one-slot mailbox. Nothing else:
   inference never runs in a callback, so a slow model can never back up the executor.
2. inference worker (its own thread): take the newest pair (older ones were replaced and
   counted), drop it if older than ``sync.max_age`` on the node clock, normalise the
   thermal frame, register it into the visible frame, fuse, publish stamped with the
   reference camera's stamp (never now()).
3. timers (steady clock, so they run while a bag is paused): camera watch (lost /
   recovered, with pass-through), /diagnostics, the one-line log summary.

It is a managed lifecycle node: *configure* validates parameters and loads and warms up
the model, *activate* creates the subscriptions, so no frame arrives before the model is
ready. With ``autostart: true`` (the default) it configures and activates itself, since a
plain ``diffmf_node`` run has no lifecycle manager.

Run: ``diffmf_node --ros-args --params-file config/diffmf.yaml`` or
``python -m diffmf_ros.node --ros-args --params-file config/diffmf.yaml``.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from .frames import to_display_uint8, to_output
from .health import TIMINGS, HealthMonitor
from .image_conversion import ImageConversionError, compressed_to_numpy, image_to_numpy, numpy_to_image_fields
from .params import NODE_NAME, NodeSettings, declare_parameters, read_settings
from .registration import Registration, RegistrationError
from .sync import STREAMS, THERMAL, VISIBLE, ApproximateTimePairer, ClockJumpDetector, LatestSlot, Pair, is_stale
from .thermal import ThermalNormaliser

NS_PER_S = 1_000_000_000
LOG_REPEAT_S = 10.0  # a repeated problem is logged again at most this often, with its count


@dataclass(frozen=True)
class Frame:
    """One converted camera frame waiting to be paired."""

    pixels: np.ndarray
    stamp_ns: int
    frame_id: str
    convert_ms: float  # time spent turning the message into pixels


@dataclass(frozen=True)
class Passthrough:
    """A frame of the live camera, published as-is while the other camera is lost."""

    stream: str
    frame: Frame


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> TimeMsg:
    return TimeMsg(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


def qos_profile(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


class _RosLogHandler(logging.Handler):
    """Sends diffmf_core's Python log records (weights, backend) to the node's ROS logger."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            self.ros_logger.error(text)
        elif record.levelno >= logging.WARNING:
            self.ros_logger.warning(text)
        else:
            self.ros_logger.info(text)


class FusionNode(LifecycleNode):
    """Pairs, fuses and publishes; see the module docstring for the per-frame path."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self._log_handler = _RosLogHandler(self.get_logger())
        logging.getLogger("diffmf_core").addHandler(self._log_handler)
        logging.getLogger("diffmf_core").setLevel(logging.INFO)
        self.settings: NodeSettings | None = None
        self.engine = None
        self.normalise: ThermalNormaliser | None = None
        self.register: Registration | None = None
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._input_subs: list[Any] = []
        self._health_timers: list[Any] = []
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._log_state: dict[str, list[float]] = {}
        self.configure_error: str | None = None
        if self.get_parameter("autostart").value and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # -- lifecycle ------------------------------------------------------------------------
    def on_configure(self, state: Any) -> TransitionCallbackReturn:
        try:
            settings = read_settings(self)
            if settings.sync_backend == "message_filters":
                _import_message_filters()
            self.normalise = ThermalNormaliser(settings.thermal_normalisation)
            self.register = Registration(settings.registration_mode, settings.homography)
            self.engine = self._load_engine(settings)
        except Exception as exc:  # any reason the node cannot run: say it in one line, stay unconfigured
            self.configure_error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
            self.get_logger().error(f"cannot configure: {self.configure_error}")
            return TransitionCallbackReturn.FAILURE
        self.settings = settings
        self.configure_error = None
        out_qos = qos_profile(settings.output_reliability, settings.output_depth)
        self.fused_pub = self.create_lifecycle_publisher(Image, settings.output_topic, out_qos)
        self.debug_pub = (
            self.create_lifecycle_publisher(Image, settings.debug_topic, out_qos) if settings.debug else None
        )
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        return TransitionCallbackReturn.SUCCESS

    def _load_engine(self, settings: NodeSettings) -> Any:
        from diffmf_core import FusionEngine

        started = time.perf_counter()
        engine = FusionEngine(
            checkpoint=settings.checkpoint or None,
            preset=settings.preset,
            device=None if settings.device == "auto" else settings.device,
            dtype=None if settings.dtype == "auto" else settings.dtype,
        )
        if settings.warmup_width and settings.warmup_height:
            engine.warmup(settings.warmup_height, settings.warmup_width)
        info = engine.info()
        self.get_logger().info(
            f"model ready in {time.perf_counter() - started:.1f} s: device={info['device']} dtype={info['dtype']}"
            f" scan={info['scan_backend']} ({info['scan_layout']}) weights={info['checkpoint']}"
            f" (warm-up {settings.warmup_width}x{settings.warmup_height})"
        )
        return engine

    def on_activate(self, state: Any) -> TransitionCallbackReturn:
        s = self.settings
        self.health = HealthMonitor(STREAMS, s.camera_timeout, s.stats_window)
        self.slot: LatestSlot[Pair | Passthrough] = LatestSlot()
        self.pairer = ApproximateTimePairer(s.slop, s.queue_size, reference=s.reference)
        self._pairer_drops_seen: collections.Counter[str] = collections.Counter()
        self._clock_watch = ClockJumpDetector(s.clock_jump_tolerance)
        self._stamp_watch = {stream: ClockJumpDetector(s.clock_jump_tolerance) for stream in STREAMS}
        self.clock_jumps = 0
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="diffmf-inference", daemon=True)
        self._worker.start()
        self._subscribe(s)
        watch_period = max(0.05, min(0.25, s.camera_timeout / 4))
        self._health_timers = [
            self.create_timer(watch_period, self._watch_cameras, clock=self._steady),
            self.create_timer(s.diagnostics_period, self._publish_diagnostics, clock=self._steady),
        ]
        if s.summary_period > 0:
            self._health_timers.append(self.create_timer(s.summary_period, self._log_summary, clock=self._steady))
        topics = ", ".join(sub.topic_name for sub in self._input_subs if hasattr(sub, "topic_name"))
        self.get_logger().info(f"active: fusing {topics or 'synchronised inputs'} -> {self.fused_pub.topic_name}")
        return super().on_activate(state)

    def _subscribe(self, s: NodeSettings) -> None:
        in_qos = qos_profile(s.input_reliability, s.input_depth)
        cameras = {THERMAL: s.thermal, VISIBLE: s.visible}
        if s.sync_backend == "message_filters":
            message_filters = _import_message_filters()
            filters = []
            for stream, camera in cameras.items():
                msg_type = Image if camera.transport == "raw" else CompressedImage
                mf_sub = message_filters.Subscriber(self, msg_type, camera.subscribed_topic, qos_profile=in_qos)
                mf_sub.registerCallback(self._on_arrival, stream)
                filters.append(mf_sub)
                self._input_subs.append(mf_sub.sub)
            # Keyword arguments: the positional signature changed between Jazzy and Kilted.
            self._synchroniser = message_filters.ApproximateTimeSynchronizer(
                fs=filters, queue_size=s.queue_size, slop=s.slop
            )
            self._synchroniser.registerCallback(self._on_synchronised)
            return
        for stream, camera in cameras.items():
            msg_type = Image if camera.transport == "raw" else CompressedImage
            self._input_subs.append(
                self.create_subscription(
                    msg_type, camera.subscribed_topic, lambda msg, stream=stream: self._on_frame(stream, msg), in_qos,
                    event_callbacks=_subscription_events(
                        incompatible_qos=lambda info, stream=stream: self._on_incompatible_qos(stream, info),
                        message_lost=lambda info, stream=stream: self._on_message_lost(stream, info),
                    ),
                )
            )

    def _on_incompatible_qos(self, stream: str, info: Any) -> None:
        camera = self.settings.thermal if stream == THERMAL else self.settings.visible
        self._log_once(
            f"incompatible_qos_{stream}",
            f"{stream}: a publisher on {camera.subscribed_topic} offers a QoS our subscription cannot accept"
            f" (policy {info.last_policy_kind}): no frames will arrive from it. A best_effort camera needs"
            " qos.input.reliability: best_effort",
        )

    def _on_message_lost(self, stream: str, info: Any) -> None:
        """DDS reports frames it lost before delivery (best_effort with frames larger than the socket buffers)."""
        self.health.dropped("lost_in_transport", int(info.total_count_change))
        self._log_once(
            f"lost_{stream}",
            f"{stream}: DDS lost {info.total_count_change} frame(s) before delivery; with large frames use"
            " qos.input.reliability: reliable (if the camera publishes reliable) or raise net.core.rmem_max",
        )

    def on_deactivate(self, state: Any) -> TransitionCallbackReturn:
        self._teardown_activity()
        return super().on_deactivate(state)

    def on_cleanup(self, state: Any) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: Any) -> TransitionCallbackReturn:
        self._teardown_activity()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _teardown_activity(self) -> None:
        for sub in self._input_subs:
            self.destroy_subscription(sub)
        for timer in self._health_timers:
            self.destroy_timer(timer)
        self._input_subs, self._health_timers = [], []
        self._stop.set()
        if self._worker is not None:
            self.slot.close()
            self._worker.join(timeout=30)
            self._worker = None

    def _release(self) -> None:
        for name in ("fused_pub", "debug_pub"):
            pub = getattr(self, name, None)
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
                setattr(self, name, None)
        if getattr(self, "diagnostics_pub", None) is not None:
            self.destroy_publisher(self.diagnostics_pub)
            self.diagnostics_pub = None
        self.engine = None

    def destroy_node(self) -> None:
        self._teardown_activity()
        logging.getLogger("diffmf_core").removeHandler(self._log_handler)
        super().destroy_node()

    # -- callbacks: convert and store, nothing more ---------------------------------------
    def _on_frame(self, stream: str, msg: Any) -> None:
        started = time.perf_counter()
        frame = self._accept(stream, msg, started)
        if frame is None:
            return
        pairs = self.pairer.push(stream, frame.stamp_ns, frame)
        self._collect_pairer_drops()
        for pair in pairs:
            self._hand_over(pair)
        self.health.queues(self.pairer.queue_lengths(), len(self.slot))
        self.health.timed("callback", (time.perf_counter() - started) * 1e3)

    def _accept(self, stream: str, msg: Any, started: float) -> Frame | None:
        """Arrival bookkeeping, clock checks, conversion; the frame, or None when it was dropped."""
        self.health.frame_arrived(stream)
        stamp_ns = stamp_to_ns(msg.header.stamp)
        now_ns = self.get_clock().now().nanoseconds
        if self._clock_watch.update(now_ns) or self._stamp_watch[stream].update(stamp_ns):
            self._on_clock_jump(stream)
        pixels = self._convert(stream, msg)
        if pixels is None:
            return None
        if is_stale(stamp_ns, now_ns, self.settings.max_age):
            self._drop("stale", f"{stream} frame dropped: older than max_age {self.settings.max_age} s on arrival")
            return None
        frame = Frame(pixels, stamp_ns, msg.header.frame_id, (time.perf_counter() - started) * 1e3)
        other = VISIBLE if stream == THERMAL else THERMAL
        if self.settings.passthrough and self.health.is_lost(other):
            self._hand_over(Passthrough(stream, frame))
        return frame

    def _on_arrival(self, msg: Any, stream: str) -> None:
        """message_filters backend: per-camera bookkeeping and pass-through; pairing is message_filters'."""
        self.health.frame_arrived(stream)
        other = VISIBLE if stream == THERMAL else THERMAL
        if self.settings.passthrough and self.health.is_lost(other):
            frame = self._accept_unpaired(stream, msg)
            if frame is not None:
                self._hand_over(Passthrough(stream, frame))

    def _convert(self, stream: str, msg: Any) -> np.ndarray | None:
        """The message's pixels, or None when it cannot be converted (dropped and counted)."""
        camera = self.settings.thermal if stream == THERMAL else self.settings.visible
        convert = image_to_numpy if camera.transport == "raw" else compressed_to_numpy
        try:
            return convert(msg, max_pixels=self.settings.max_image_pixels)
        except ImageConversionError as exc:
            self._drop(exc.reason, f"{stream} frame dropped: {exc}")
            return None

    def _accept_unpaired(self, stream: str, msg: Any) -> Frame | None:
        started = time.perf_counter()
        pixels = self._convert(stream, msg)
        if pixels is None:
            return None
        return Frame(pixels, stamp_to_ns(msg.header.stamp), msg.header.frame_id, (time.perf_counter() - started) * 1e3)

    def _on_synchronised(self, thermal_msg: Any, visible_msg: Any) -> None:
        """message_filters backend: called under its lock, so convert and hand over only."""
        frames = [self._accept_unpaired(THERMAL, thermal_msg), self._accept_unpaired(VISIBLE, visible_msg)]
        if None in frames:
            return
        ir, vi = frames
        stamp = vi.stamp_ns if self.settings.reference == VISIBLE else ir.stamp_ns
        self._hand_over(Pair(ir, vi, ir.stamp_ns, vi.stamp_ns, stamp))

    def _hand_over(self, item: Pair | Passthrough) -> None:
        if self.slot.put(item) is not None:
            self.health.dropped("superseded")

    def _collect_pairer_drops(self) -> None:
        fresh = self.pairer.drops - self._pairer_drops_seen
        if fresh:
            self.health.add_drops(fresh)
            self._pairer_drops_seen.update(fresh)
            for reason in fresh:
                if reason == "out_of_order":
                    self._log_once(reason, "frames arriving older than the last pair are dropped (out_of_order)")

    def _on_clock_jump(self, stream: str) -> None:
        self.clock_jumps += 1
        self.pairer.reset("clock_jump")
        self._pairer_drops_seen = collections.Counter(self.pairer.drops)
        cleared = self.slot.clear()
        self.health.dropped("clock_jump", 1 if cleared is not None else 0)
        self.normalise.reset()
        for watch in self._stamp_watch.values():
            watch.reset()
        self._log_once("clock_jump", f"time went backwards (seen on {stream}; a looping bag?): queues reset")

    # -- inference worker -----------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            item = self.slot.take(timeout=0.5)
            if item is None:
                continue
            try:
                if isinstance(item, Pair):
                    self._fuse_and_publish(item)
                else:
                    self._pass_through(item)
            except Exception as exc:  # one bad frame must never stop the worker
                self._drop("fusion_error", f"frame dropped: {type(exc).__name__}: {exc}")

    def _fuse_and_publish(self, pair: Pair) -> None:
        s = self.settings
        if is_stale(pair.stamp_ns, self.get_clock().now().nanoseconds, s.max_age):
            self._drop("stale", f"pair dropped: older than max_age {s.max_age} s when the worker got to it")
            return
        t0 = time.perf_counter()
        visible = pair.vi.pixels
        try:
            thermal = self.register(self.normalise(pair.ir.pixels), visible.shape)
        except RegistrationError as exc:
            self._drop(exc.reason, f"pair dropped: {exc}")
            return
        t1 = time.perf_counter()
        fused = self.engine.fuse(thermal, visible)
        t2 = time.perf_counter()
        reference = pair.vi if s.reference == VISIBLE else pair.ir
        self._publish(self.fused_pub, to_output(fused, s.output_encoding), s.output_encoding, pair.stamp_ns,
                      s.frame_id or reference.frame_id)
        if self.debug_pub is not None:
            panels = [to_output(to_display_uint8(p), "rgb8") for p in (thermal, visible, fused)]
            self._publish(self.debug_pub, np.hstack(panels), "bgr8", pair.stamp_ns, s.frame_id or reference.frame_id)
        t3 = time.perf_counter()
        prepare_ms, publish_ms = (t1 - t0) * 1e3, (t3 - t2) * 1e3
        self.health.published(
            True,
            inference=(t2 - t1) * 1e3,
            prepare=prepare_ms,
            publish=publish_ms,
            overhead=pair.ir.convert_ms + pair.vi.convert_ms + prepare_ms + publish_ms,
            latency=(self.get_clock().now().nanoseconds - pair.stamp_ns) / 1e6,
        )

    def _pass_through(self, item: Passthrough) -> None:
        s = self.settings
        t0 = time.perf_counter()
        pixels = item.frame.pixels
        if item.stream == THERMAL:
            pixels = self.normalise(pixels)
        self._publish(self.fused_pub, to_output(to_display_uint8(pixels), s.output_encoding), s.output_encoding,
                      item.frame.stamp_ns, s.frame_id or item.frame.frame_id)
        self.health.published(
            False,
            overhead=item.frame.convert_ms + (time.perf_counter() - t0) * 1e3,
            latency=(self.get_clock().now().nanoseconds - item.frame.stamp_ns) / 1e6,
        )

    def _publish(self, publisher: Any, pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> None:
        msg = Image(**numpy_to_image_fields(pixels, encoding, as_bytes=True))
        msg.header.stamp = ns_to_stamp(stamp_ns)
        msg.header.frame_id = frame_id
        publisher.publish(msg)

    # -- health ---------------------------------------------------------------------------
    def _drop(self, reason: str, text: str) -> None:
        self.health.dropped(reason)
        self._log_once(reason, text)

    def _log_once(self, key: str, text: str) -> None:
        """Warn the first time, then at most every LOG_REPEAT_S seconds per key with the count in between."""
        now = time.monotonic()
        state = self._log_state.get(key)
        if state is None:
            self._log_state[key] = [now, 0]
            self.get_logger().warning(text)
        elif now - state[0] >= LOG_REPEAT_S:
            self.get_logger().warning(f"{text} ({state[1]} more like it in the last {now - state[0]:.0f} s)")
            self._log_state[key] = [now, 0]
        else:
            state[1] += 1

    def _watch_cameras(self) -> None:
        for event in self.health.camera_events():
            camera = self.settings.thermal if event.stream == THERMAL else self.settings.visible
            other = VISIBLE if event.stream == THERMAL else THERMAL
            if event.lost:
                action = "not publishing"
                if self.settings.passthrough:
                    action = f"publishing the {other} camera alone while it runs"
                silence = f"for {event.silent_for:.1f} s"
                if not self.health.received[event.stream]:
                    silence = f"yet ({event.silent_for:.1f} s after activation)"
                self.get_logger().warning(
                    f"{event.stream} camera lost: no frames on {camera.subscribed_topic} {silence}; {action}"
                )
                self.pairer.reset("unpaired")
                self._pairer_drops_seen = collections.Counter(self.pairer.drops)
            else:
                self.get_logger().info(f"{event.stream} camera back: fusing again")

    def _publish_diagnostics(self) -> None:
        self._collect_pairer_drops()
        snap = self.health.snapshot()
        info = self.engine.info() if self.engine is not None else {}
        values = {
            "thermal_hz": f"{snap['input_hz'][THERMAL]:.1f}",
            "visible_hz": f"{snap['input_hz'][VISIBLE]:.1f}",
            "output_hz": f"{snap['output_hz']:.1f}",
            "frames_thermal": snap["received"].get(THERMAL, 0),
            "frames_visible": snap["received"].get(VISIBLE, 0),
            "fused": snap["fused"],
            "passed_through": snap["passed_through"],
            "lost_cameras": ",".join(snap["lost"]),
            "drops_total": sum(snap["drops"].values()),
            **{f"drop.{reason}": count for reason, count in sorted(snap["drops"].items())},
            "clock_jumps": self.clock_jumps,
            **{
                f"{name}_p{q}_ms": f"{snap[f'{name}_ms'][i]:.2f}"
                for name in TIMINGS
                for i, q in enumerate((50, 99))
            },
            "pending_thermal": snap["pending"].get(THERMAL, 0),
            "pending_visible": snap["pending"].get(VISIBLE, 0),
            "pending_slot": snap["pending"].get("slot", 0),
            "pending_peak": snap["pending_peak"],
            "queue_size": self.settings.queue_size,
            "peak_rss_mb": f"{snap['peak_rss_mb']:.1f}",
            "sync_backend": self.settings.sync_backend,
            "scan_backend": info.get("scan_backend", ""),
            "scan_layout": info.get("scan_layout", ""),
            "device": info.get("device", ""),
            "dtype": info.get("dtype", ""),
            "weights": info.get("checkpoint", ""),
        }
        status = DiagnosticStatus(
            level=bytes([snap["level"]]),
            name=f"{self.get_fully_qualified_name()}: fusion",
            message=snap["message"],
            hardware_id=str(info.get("device", "")),
            values=[KeyValue(key=key, value=str(value)) for key, value in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def _log_summary(self) -> None:
        snap = self.health.snapshot(consume=False)
        drops = " ".join(f"{k}={v}" for k, v in sorted(snap["drops"].items())) or "none"
        inference, overhead, latency = snap["inference_ms"], snap["overhead_ms"], snap["latency_ms"]
        self.get_logger().info(
            f"fused {snap['fused']} ({snap['output_hz']:.1f} Hz out; thermal {snap['input_hz'][THERMAL]:.1f} Hz,"
            f" visible {snap['input_hz'][VISIBLE]:.1f} Hz in)"
            f" | inference p50 {_ms(inference[0])} p99 {_ms(inference[1])}"
            f" | overhead p50 {_ms(overhead[0])} | latency p50 {_ms(latency[0])} p99 {_ms(latency[1])}"
            f" | drops {drops}" + (f" | LOST: {', '.join(snap['lost'])}" if snap["lost"] else "")
        )


def _ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f} ms"


def _subscription_events(**callbacks: Any) -> Any:
    """SubscriptionEventCallbacks with the callbacks this rclpy knows (rclpy.event_handler since Iron)."""
    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ImportError:  # Humble
        from rclpy.qos_event import SubscriptionEventCallbacks
    import inspect

    known = inspect.signature(SubscriptionEventCallbacks.__init__).parameters
    return SubscriptionEventCallbacks(**{k: v for k, v in callbacks.items() if k in known})


def _import_message_filters() -> Any:
    try:
        import message_filters
    except ImportError:
        raise ValueError(
            "parameter sync.backend: 'message_filters' is not installed here (it ships with a ROS 2 install:"
            " apt install ros-$ROS_DISTRO-message-filters; it has no pip wheel); use sync.backend: diffmf"
        ) from None
    return message_filters


def main(args: list[str] | None = None) -> int:
    """Console entry point (diffmf_node); returns 1 when autostart could not configure the node."""
    rclpy.init(args=args)
    node = None
    try:
        node = FusionNode()
        if node.get_parameter("autostart").value and node.settings is None:
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
