"""diffmf_demo: the whole system on this machine, with no cameras and no downloads.

    diffmf_demo [--out DIR]

1. generates a short foggy-night street scene (warm people and cars; a dim, colourful,
   low-contrast visible view) and records it as a bag (thermal mono16 Image, visible JPEG
   CompressedImage), as two cameras would have;
2. starts the real fusion node (``python -m diffmf_ros.node``) in a subprocess with
   ``use_sim_time``, and plays the bag to it over ROS 2 with /clock (diffmf_play's player);
3. records the fused stream, then writes ``DIR/side_by_side.mp4`` (thermal | visible |
   fused), ``DIR/contact_sheet.png``, the fused bag and a summary with fps and latency.

All ROS 2 traffic stays on this machine: the demo sets ``ROS_AUTOMATIC_DISCOVERY_RANGE=
LOCALHOST`` and a ROS_DOMAIN_ID for itself and the node. By default playback is *paced*:
each pair waits for the previous fused frame (pausing the bag and its clock), so a slow CPU
still fuses every frame and the latency shown is the node's own, not queueing; ``--realtime``
plays at the recorded rate and lets the node drop what it cannot keep up with.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .scene_bag import CameraTopic, write_scene_bag
from .synthetic_scene import ScenePair, sequence

__all__ = ["DemoSettings", "main", "run_demo"]

DEFAULT_OUT = "diffmf_demo_out"
THERMAL_TOPIC = "/thermal/image_raw"
VISIBLE_TOPIC = "/visible/image_raw/compressed"  # image_transport naming for the node's compressed input
FUSED_TOPIC = "/fused/image_raw"
DELIVERY_DELAY_S = 0.002  # camera -> recorder delay written into the bag
NS_PER_S = 1_000_000_000


@dataclass
class DemoSettings:
    out: Path = Path(DEFAULT_OUT)
    frames: int = 40
    rate_hz: float = 8.0
    width: int = 320
    height: int = 256
    seed: int = 0
    source: str = "scene"  # scene: generated; shared: real pairs from ../shared/data
    realtime: bool = False
    time_budget: float = 100.0  # seconds, the whole run; playback stops early to keep it
    domain_id: int | None = None
    checkpoint: str = ""
    device: str = "auto"
    node_start_timeout: float = 60.0
    frame_timeout: float = 30.0


@dataclass
class DemoResult:
    published_pairs: int = 0
    fused: int = 0
    fps: float = 0.0
    latency_ms: tuple[float, float] = (0.0, 0.0)
    node_info: dict[str, str] = field(default_factory=dict)
    stopped_early: bool = False
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def pick_domain_id(explicit: int | None) -> int:
    """--domain-id, else ROS_DOMAIN_ID from the environment, else one derived from the process id."""
    if explicit is not None:
        return explicit
    if os.environ.get("ROS_DOMAIN_ID", "").isdigit():
        return int(os.environ["ROS_DOMAIN_ID"])
    return 10 + os.getpid() % 90  # 10..99: clear of the common default 0 and of the large-port range


def node_command(settings: DemoSettings) -> list[str]:
    """The node exactly as a user runs it, with the demo's parameters on the command line."""
    params = {
        "use_sim_time": "true",
        "visible.transport": "compressed",
        "model.warmup_width": settings.width,
        "model.warmup_height": settings.height,
        "model.device": settings.device,
        "output.encoding": "bgr8",
        # A replayed bag should arrive whole (ros2 bag play publishes reliably too); live
        # cameras keep the node's best-effort sensor-data default.
        "qos.input.reliability": "reliable",
        # Paced playback pauses both cameras between frames; that is not a camera failure,
        # and a passed-through raw frame must not be mistaken for a fused one.
        "health.passthrough": "false",
        "health.camera_timeout": 3600.0 if not settings.realtime else 2.0,
        "health.summary_period": 5.0,
    }
    if settings.checkpoint:
        params["model.checkpoint"] = settings.checkpoint
    args = [sys.executable, "-m", "diffmf_ros.node", "--ros-args"]
    for name, value in params.items():
        args += ["-p", f"{name}:={value}"]
    return args


class _Recorder:
    """Collects fused images and the node's diagnostics on the demo's own rclpy node."""

    def __init__(self, node: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.cond = threading.Condition()
        self.fused: dict[int, tuple[Any, float]] = {}  # stamp -> (msg, wall time received)
        self.diagnostics: list[dict[str, str]] = []
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, FUSED_TOPIC, self._on_fused, qos)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_fused(self, msg: Any) -> None:
        stamp = msg.header.stamp.sec * NS_PER_S + msg.header.stamp.nanosec
        with self.cond:
            self.fused[stamp] = (msg, time.time())
            self.cond.notify_all()

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.endswith("fusion"):
                with self.cond:
                    self.diagnostics.append({kv.key: kv.value for kv in status.values})
                    self.cond.notify_all()

    def wait_for_diagnostics(self, after: int, timeout: float) -> bool:
        """Wait until more than ``after`` diagnostics messages have arrived."""
        with self.cond:
            return self.cond.wait_for(lambda: len(self.diagnostics) > after, timeout)

    def wait_for(self, stamp: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: stamp in self.fused, timeout)


def _clear_previous(out: Path) -> None:
    """Remove this demo's own earlier outputs from ``out`` (bags cannot be overwritten in place)."""
    for name in ("scene_bag", "fused_bag"):
        old = out / name
        if (old / "metadata.yaml").is_file():
            shutil.rmtree(old)
        elif old.exists():
            raise FileExistsError(f"{old} exists and is not a bag this demo wrote; choose another --out")


def _stop_process(process: subprocess.Popen, grace: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)  # rclpy shuts down cleanly on Ctrl-C
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_demo(settings: DemoSettings, log: Any = print) -> DemoResult:
    """Generate, play through the node, record, render. Raises RuntimeError with the node's log on failure."""
    started = time.monotonic()
    out = settings.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    domain = pick_domain_id(settings.domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    result = DemoResult()

    pairs, described = _make_sequence(settings)
    scene_bag = out / "scene_bag"
    write_scene_bag(
        scene_bag, pairs,
        thermal=CameraTopic(THERMAL_TOPIC, "raw", frame_id="thermal_camera"),
        visible=CameraTopic(VISIBLE_TOPIC, "jpeg", frame_id="visible_camera"),
        storage="mcap", delivery_delay_s=DELIVERY_DELAY_S,
    )
    log(f"diffmf_demo: {described}: {len(pairs)} thermal/visible pairs, {settings.width}x{settings.height} at"
        f" {settings.rate_hz:g} Hz -> {scene_bag} (ROS_DOMAIN_ID={domain}, localhost only)")

    node_log = out / "node.log"
    with open(node_log, "w") as log_file:
        node = subprocess.Popen(node_command(settings), stdout=log_file, stderr=subprocess.STDOUT,
                                env=dict(os.environ), start_new_session=True)
    try:
        fused = _play_through_node(settings, pairs, scene_bag, node, node_log, started, result, log)
    finally:
        _stop_process(node)
    _write_outputs(settings, pairs, fused, out, result)
    result.seconds = time.monotonic() - started
    return result


def _make_sequence(settings: DemoSettings) -> tuple[list[ScenePair], str]:
    if settings.source == "shared":
        from .shared_pairs import find_shared_data, panning_sequence

        root = find_shared_data()
        if root is None:
            raise FileNotFoundError("--source shared: no ../shared/data beside the checkout (or $DIFFMF_SHARED_DATA)")
        pairs = panning_sequence(root, settings.frames, settings.rate_hz, settings.width, settings.height)
        return pairs, f"real MSRS pairs from {root}"
    pairs = list(sequence(settings.frames, settings.rate_hz, settings.width, settings.height, settings.seed))
    return pairs, "generated scene"


def _play_through_node(settings: DemoSettings, pairs: list[ScenePair], scene_bag: Path, node: subprocess.Popen,
                       node_log: Path, started: float, result: DemoResult, log: Any) -> dict[int, tuple[Any, float]]:
    """Play the scene bag to the node; the fused messages received, by stamp, with their arrival times."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from .player import BagPlayer

    context = rclpy.Context()
    rclpy.init(context=context)
    ros_node = rclpy.create_node("diffmf_demo", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(ros_node)
    spinner = threading.Thread(target=executor.spin, name="diffmf-demo-spin", daemon=True)
    spinner.start()
    player = None
    try:
        recorder = _Recorder(ros_node)
        player = BagPlayer(ros_node, scene_bag, clock=True)
        log("diffmf_demo: starting the fusion node (loads and warms up the model) ...")
        deadline = time.monotonic() + settings.node_start_timeout
        while not player.wait_for_subscribers(0.5):
            if node.poll() is not None:
                raise RuntimeError(f"the fusion node exited (code {node.returncode}):\n{_tail(node_log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fusion node did not subscribe within {settings.node_start_timeout:.0f} s:"
                                   f"\n{_tail(node_log)}")
        log(f"diffmf_demo: node ready after {time.monotonic() - started:.1f} s; playing"
            f" {'at the recorded rate' if settings.realtime else 'paced by the node'} ...")

        thermal_log = {p.thermal_stamp_ns + int(DELIVERY_DELAY_S * NS_PER_S): p for p in pairs}
        completed: dict[int, float] = {}  # visible stamp -> wall time the pair was complete
        reserve = 12.0  # seconds kept for the last frame, stopping the node and writing the outputs

        def on_publish(topic: str, log_ns: int, wall: float) -> None:
            pair = thermal_log.get(log_ns) if topic == THERMAL_TOPIC else None
            if pair is not None:
                completed[pair.visible_stamp_ns] = wall
                result.published_pairs += 1

        def pace(topic: str, log_ns: int) -> None:
            if time.monotonic() - started > settings.time_budget - reserve:
                result.stopped_early = True
                player.stop()
                return
            if settings.realtime or topic != VISIBLE_TOPIC or not completed:
                return
            last = max(completed)
            if not recorder.wait_for(last, settings.frame_timeout) and node.poll() is not None:
                player.stop()

        player.play(on_publish=on_publish, gate=pace, progress=None)
        if completed:
            recorder.wait_for(max(completed), min(settings.frame_timeout, 10.0))
        if node.poll() is not None:
            raise RuntimeError(f"the fusion node exited during playback (code {node.returncode}):\n{_tail(node_log)}")
        with recorder.cond:
            seen = len(recorder.diagnostics)
        recorder.wait_for_diagnostics(seen, 2.5)  # one published after the last frame: final drop counts
        with recorder.cond:
            fused = dict(recorder.fused)
            diagnostics = list(recorder.diagnostics)
        _measure(result, fused, completed, diagnostics)
        return fused
    finally:
        if player is not None:
            player.close()
        executor.shutdown()
        ros_node.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=5)


def _measure(result: DemoResult, fused: dict[int, tuple[Any, float]], completed: dict[int, float],
             diagnostics: list[dict[str, str]]) -> None:
    result.fused = len(fused)
    latencies = [(wall - completed[s]) * 1e3 for s, (_, wall) in fused.items() if s in completed]
    if latencies:
        p50, p99 = np.percentile(latencies, (50, 99))
        result.latency_ms = (float(p50), float(p99))
    arrivals = sorted(wall for _, wall in fused.values())
    if len(arrivals) >= 2 and arrivals[-1] > arrivals[0]:
        result.fps = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    if diagnostics:
        last = diagnostics[-1]
        result.node_info = {k: last.get(k, "") for k in ("device", "scan_backend", "scan_layout", "dtype", "weights")}
        p50s = [float(d["inference_p50_ms"]) for d in diagnostics if float(d.get("inference_p50_ms", 0) or 0) > 0]
        if p50s:
            result.node_info["inference_p50_ms"] = f"{np.median(p50s):.1f}"
        drops = {k[len("drop."):]: v for k, v in last.items() if k.startswith("drop.") and v != "0"}
        result.node_info["drops"] = ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none"


def _write_outputs(settings: DemoSettings, pairs: list[ScenePair], fused: dict[int, tuple[Any, float]], out: Path,
                   result: DemoResult) -> None:
    from rclpy.serialization import serialize_message

    from .bag_io import IMAGE, BagWriter
    from .demo_outputs import contact_sheet, side_by_side, write_video
    from .image_conversion import image_to_numpy

    first = pairs[0].visible_stamp_ns
    scale = 2 if settings.width < 320 else 1
    images = {stamp: image_to_numpy(msg) for stamp, (msg, _) in fused.items()}
    if not images:
        raise RuntimeError("no fused frames came back from the node; see node.log in the output folder")
    # One video frame per camera frame, showing the newest fused frame at that time: with every
    # pair fused (paced) that is its own; in --realtime runs a dropped pair shows the last one held.
    video, sheet = [], []
    shown = None
    for pair in pairs:
        stamp = pair.visible_stamp_ns
        shown = stamp if stamp in images else shown
        if shown is None:
            continue
        caption = f"t={(shown - first) / NS_PER_S:.2f} s"
        row = side_by_side(pair.thermal, pair.visible, images[shown], scale, caption=caption)
        video.append(row)
        if shown == stamp:
            sheet.append(row)
    result.outputs["video"] = str(write_video(out / "side_by_side.mp4", video, settings.rate_hz))
    result.outputs["contact_sheet"] = str(contact_sheet(out / "contact_sheet.png", sheet))
    with BagWriter(out / "fused_bag", "mcap") as bag:
        conn = bag.add_topic(FUSED_TOPIC, IMAGE)
        for stamp in sorted(fused):
            bag.write(conn, stamp + int(DELIVERY_DELAY_S * NS_PER_S), serialize_message(fused[stamp][0]))
    result.outputs["fused_bag"] = str(out / "fused_bag")
    result.outputs["scene_bag"] = str(out / "scene_bag")
    result.outputs["node_log"] = str(out / "node.log")


def build_parser() -> argparse.ArgumentParser:
    d = DemoSettings()
    p = argparse.ArgumentParser(
        prog="diffmf_demo",
        description="Run DIFF-MF fusion end to end on a generated thermal/visible scene through the real ROS 2"
        " node (no cameras, no downloads; ROS traffic stays on this machine).",
    )
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default ./{DEFAULT_OUT})")
    p.add_argument("--frames", type=int, default=d.frames, help=f"scene length in frame pairs (default {d.frames})")
    p.add_argument("--rate-hz", type=float, default=d.rate_hz, help=f"camera frame rate (default {d.rate_hz:g})")
    p.add_argument("--width", type=int, default=d.width, help=f"frame width (default {d.width})")
    p.add_argument("--height", type=int, default=d.height, help=f"frame height (default {d.height})")
    p.add_argument("--seed", type=int, default=d.seed, help="scene layout seed")
    p.add_argument("--source", choices=("scene", "shared"), default=d.source,
                   help="scene: the generated street (default); shared: pan over real pairs from ../shared/data")
    p.add_argument("--realtime", action="store_true",
                   help="play at the recorded rate and let the node drop what it cannot keep up with")
    p.add_argument("--time-budget", type=float, default=d.time_budget, metavar="SECONDS",
                   help=f"stop playback early to finish within about this long (default {d.time_budget:g})")
    p.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (default: $ROS_DOMAIN_ID, else one of its own)")
    p.add_argument("--checkpoint", default="", help="model weights for the node (default: the shipped ones)")
    p.add_argument("--device", default="auto", help="node's model device (default auto)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 1 or args.rate_hz <= 0 or args.width < 32 or args.height < 32:
        print("diffmf_demo: error: need --frames >= 1, --rate-hz > 0 and a frame of at least 32x32", file=sys.stderr)
        return 2
    if args.domain_id is not None and not 0 <= args.domain_id <= 232:
        print(f"diffmf_demo: error: --domain-id {args.domain_id} is outside 0..232", file=sys.stderr)
        return 2
    settings = DemoSettings(
        out=Path(args.out), frames=args.frames, rate_hz=args.rate_hz, width=args.width, height=args.height,
        seed=args.seed, source=args.source, realtime=args.realtime, time_budget=args.time_budget,
        domain_id=args.domain_id, checkpoint=args.checkpoint, device=args.device,
    )
    try:
        result = run_demo(settings)
    except (RuntimeError, OSError, ValueError) as exc:  # node failure, output folder, unreadable data
        print(f"diffmf_demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("diffmf_demo: interrupted", file=sys.stderr)
        return 130
    info = result.node_info
    print(f"diffmf_demo: node: device={info.get('device', '?')} scan={info.get('scan_backend', '?')}"
          f" ({info.get('scan_layout', '?')})"
          f" dtype={info.get('dtype', '?')} weights={info.get('weights', '?')}")
    print(f"diffmf_demo: fused {result.fused} of {result.published_pairs} pairs published"
          + (" (stopped early to stay within the time budget)" if result.stopped_early else "")
          + f"; node drops: {info.get('drops', '?')}")
    print(f"diffmf_demo: {result.fps:.2f} fused frames/s; end-to-end latency p50 {result.latency_ms[0]:.0f} ms"
          f" p99 {result.latency_ms[1]:.0f} ms (publish -> fused received); node inference p50"
          f" {info.get('inference_p50_ms', '?')} ms; total {result.seconds:.0f} s")
    for name, path in result.outputs.items():
        print(f"diffmf_demo: {name}: {path}")
    summary = {
        "fused": result.fused, "published_pairs": result.published_pairs, "fps": round(result.fps, 3),
        "latency_p50_ms": round(result.latency_ms[0], 1), "latency_p99_ms": round(result.latency_ms[1], 1),
        "seconds": round(result.seconds, 1), "stopped_early": result.stopped_early, "node": info,
        "settings": {"frames": settings.frames, "rate_hz": settings.rate_hz, "width": settings.width,
                     "height": settings.height, "realtime": settings.realtime},
    }
    out = settings.out.resolve()
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"diffmf_demo: outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
