"""Node benchmark: end-to-end latency and throughput of the fusion node across processes.

    python bench/node_latency.py [--sizes 320x256 640x512] [--device auto] [--out DIR]

The node runs as ``python -m diffmf_ros.node`` in a child process; this process is the camera
rig (thermal mono16 + visible bgr8 raw Images) and the fused-image subscriber, so every figure
includes DDS both ways. Per frame size, after unmeasured warm-up pairs:

* lockstep: one pair at a time, the next only after its fused image arrived: the latency of a
  frame through an idle node;
* camera rate (``--rate``, default 60 Hz) and saturation (``--saturate``, default 240 Hz)
  streams for ``--seconds`` each: fused frames per second and latency under load.

Latency is wall clock from just before publishing (the stamp) to the fused image's arrival
here. The node's own /diagnostics split it: model (``engine.fuse``), node overhead
(conversion of both inputs + normalise/register + output encode and publish), and the
callback cost (conversion + pairing); the rest is DDS and executor scheduling. The node's
p50/p99 windows are set to cover exactly the measured frames of each phase.

Prints a table and writes node_latency.md, node_latency.json and the node's log into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))

import rclpy  # noqa: E402

from diffmf_ros.probe import FusionProbe, NodeProcess, synthetic_pair  # noqa: E402

NODE = "bench_fusion"


def parse_size(text: str) -> tuple[int, int]:
    """'640x512' -> (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}' is not WIDTHxHEIGHT (e.g. 640x512)") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"size '{text}' must be positive")
    return width, height


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Rig:
    """The camera side: pre-built messages per size, stamps set at publish time."""

    def __init__(self, probe: FusionProbe) -> None:
        self.probe = probe
        self.msgs: dict[tuple[int, int], tuple] = {}

    def prepare(self, width: int, height: int) -> None:
        thermal, visible = synthetic_pair(height, width, 3)
        self.msgs[(width, height)] = (
            self.probe.make_msg("thermal", thermal, 0),
            self.probe.make_msg("visible", visible, 0),
        )

    def publish(self, size: tuple[int, int]) -> int:
        stamp = time.time_ns()
        for msg in self.msgs[size]:
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        thermal, visible = self.msgs[size]
        self.probe.publish("visible", visible)
        self.probe.publish("thermal", thermal)
        return stamp


def latencies_ms(probe: FusionProbe, start_index: int, stamps: set[int]) -> list[float]:
    out = []
    for received in probe.fused[start_index:]:
        stamp = received.msg.header.stamp.sec * 1_000_000_000 + received.msg.header.stamp.nanosec
        if stamp in stamps:
            out.append((received.wall_ns - stamp) / 1e6)
    return out


def node_figures(probe: FusionProbe, fused_at_least: int, timeout: float) -> dict:
    """The first diagnostics that have seen ``fused_at_least`` fused frames."""
    status = probe.wait_for_diagnostics(lambda d: int(d["fused"]) >= fused_at_least, timeout)
    if status is None:
        raise RuntimeError(f"the node's diagnostics never reached {fused_at_least} fused frames")
    return status


def drops_of(status: dict) -> dict[str, int]:
    return {k[len("drop."):]: int(v) for k, v in status.items() if k.startswith("drop.")}


def run_lockstep(rig: Rig, size: tuple[int, int], frames: int, timeout: float, label: str) -> dict:
    probe = rig.probe
    start = len(probe.fused)
    stamps, lost = set(), 0
    for _ in tqdm(range(frames), desc=label, unit="pair", leave=False, mininterval=1.0):
        stamp = rig.publish(size)
        stamps.add(stamp)
        if not probe.wait_for(lambda s=stamp: any(_stamp(r.msg) == s for r in probe.fused[start:]), timeout):
            lost += 1
    return {"stamps": stamps, "start": start, "lost": lost, "published": frames, "seconds": None}


def run_stream(rig: Rig, size: tuple[int, int], rate: float, seconds: float, label: str) -> dict:
    probe = rig.probe
    start = len(probe.fused)
    stamps = set()
    period = 1.0 / rate
    began = next_at = time.monotonic()
    count = int(rate * seconds)
    for _ in tqdm(range(count), desc=label, unit="pair", leave=False, mininterval=1.0):
        stamps.add(rig.publish(size))
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    elapsed = time.monotonic() - began
    probe.wait_for(lambda: False, 1.0)  # let the last fused frames arrive
    return {"stamps": stamps, "start": start, "lost": None, "published": count, "seconds": elapsed}


def summarise(phase: str, size: tuple[int, int], camera_hz: float | None, run: dict, probe: FusionProbe,
              before: dict, after: dict) -> dict:
    e2e = latencies_ms(probe, run["start"], run["stamps"])
    fused = len(e2e)
    seconds = run["seconds"]
    drops = {k: v - drops_of(before).get(k, 0) for k, v in drops_of(after).items()}
    row = {
        "size": f"{size[0]}x{size[1]}",
        "phase": phase,
        "camera_hz": camera_hz,
        "pairs_published": run["published"],
        "fused_received": fused,
        "fused_hz": fused / seconds if seconds else None,
        "e2e_p50_ms": percentile(e2e, 50),
        "e2e_p99_ms": percentile(e2e, 99),
        "e2e_max_ms": max(e2e) if e2e else float("nan"),
        "drops": {k: v for k, v in drops.items() if v},
    }
    for name in ("inference", "overhead", "callback", "prepare", "publish", "latency"):
        for q in (50, 99):
            row[f"node_{name}_p{q}_ms"] = float(after[f"{name}_p{q}_ms"])
    # What is neither model nor node work: DDS both ways, executor scheduling and, when pairs
    # arrive faster than the model runs, the wait in the one-slot mailbox.
    row["dds_and_wait_p50_ms"] = row["e2e_p50_ms"] - row["node_inference_p50_ms"] - row["node_overhead_p50_ms"]
    if run["lost"]:
        row["lost_in_lockstep"] = run["lost"]
    return row


def machine(status: dict) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "device": status.get("device"),
        "dtype": status.get("dtype"),
        "scan_backend": status.get("scan_backend"),
        "weights": status.get("weights"),
        "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
    }


def fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


COLUMNS = [
    ("size", "size"), ("phase", "phase"), ("camera Hz", "camera_hz"), ("fused Hz", "fused_hz"),
    ("e2e p50 ms", "e2e_p50_ms"), ("e2e p99 ms", "e2e_p99_ms"),
    ("model p50", "node_inference_p50_ms"), ("model p99", "node_inference_p99_ms"),
    ("node overhead p50", "node_overhead_p50_ms"), ("node overhead p99", "node_overhead_p99_ms"),
    ("callback p50", "node_callback_p50_ms"), ("DDS+wait p50", "dds_and_wait_p50_ms"),
]


def markdown(rows: list[dict], info: dict) -> str:
    lines = [
        f"# Node latency ({info['date']})",
        "",
        f"Machine: {info['machine']['cpu']} ({info['machine']['cores']} cores), device {info['machine']['device']},"
        f" dtype {info['machine']['dtype']}, scan {info['machine']['scan_backend']},"
        f" weights {info['machine']['weights']}, {info['machine']['rmw']}.",
        "",
        "| " + " | ".join(title for title, _ in COLUMNS) + " | drops |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    notes = []
    for row in rows:
        drops = ", ".join(f"{k} {v}" for k, v in sorted(row["drops"].items())) or "0"
        cells = [fmt(row[key]) for _, key in COLUMNS]
        if "note" in row:
            notes.append(f"{row['size']} {row['phase']}: {row['note']}.")
            cells[1] += f" [{len(notes)}]"
        lines.append("| " + " | ".join(cells) + f" | {drops} |")
    lines += [
        "",
        "e2e: publish -> fused image received, across processes (wall clock). model: engine.fuse in the node."
        " node overhead: both conversions + normalise/register + encode/publish. callback: one subscription"
        " callback (conversion + pairing). DDS+wait: e2e p50 - model p50 - overhead p50 (DDS both ways, scheduling,"
        " and the wait for the busy model when pairs come faster than it runs).",
        *[f"[{i}] {note}" for i, note in enumerate(notes, 1)],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(320, 256), (640, 512)])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured pairs per size")
    parser.add_argument("--frames", type=int, default=100, help="lockstep pairs per size")
    parser.add_argument("--rate", type=float, default=60.0, help="camera rate of the streaming phase, Hz")
    parser.add_argument("--saturate", type=float, default=240.0,
                        help="camera rate of the saturation phase, Hz (0: skip)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each streaming phase")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one fused frame")
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    args = parser.parse_args(argv)

    largest = max(args.sizes, key=lambda s: s[0] * s[1])
    overrides = {
        "model.device": args.device,
        "model.dtype": args.dtype,
        "model.checkpoint": args.checkpoint,
        "model.warmup_width": largest[0],
        "model.warmup_height": largest[1],
        "sync.max_age": 0.0,  # measure every pair, however late
        # The rig publishes reliable, as most camera drivers do; a best_effort subscription
        # loses most 640x512 colour frames to UDP fragment drops with default socket buffers.
        "qos.input.reliability": "reliable",
        "health.stats_window": args.frames,
        "health.diagnostics_period": 0.5,
        "health.summary_period": 5.0,
        "health.camera_timeout": 3600.0,
    }
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)  # Ctrl-C raises KeyboardInterrupt here
    node = NodeProcess([], overrides=overrides, name=NODE)
    probe = FusionProbe("bench_probe", depth=100, keep_images=False)
    rig = Rig(probe)
    rows: list[dict] = []
    status: dict = {}
    try:
        print(f"starting the node (ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}) ...", flush=True)
        if not probe.wait_for_subscribers(timeout=300):
            print(f"the node never subscribed:\n{node.tail()}", file=sys.stderr)
            return 1
        for size in args.sizes:
            label = f"{size[0]}x{size[1]}"
            rig.prepare(*size)
            run_lockstep(rig, size, args.warmup, args.timeout, f"{label} warm-up")
            phases = [("lockstep", None)]
            phases += [("stream", args.rate)] if args.rate > 0 else []
            phases += [("saturate", args.saturate)] if args.saturate > 0 else []
            for phase, rate in phases:
                before = probe.wait_for_diagnostics(lambda d: True, 30)
                fused_before = int(before["fused"])
                if phase == "lockstep":
                    run = run_lockstep(rig, size, args.frames, args.timeout, f"{label} lockstep")
                else:
                    run = run_stream(rig, size, rate, args.seconds, f"{label} {phase} {rate:.0f} Hz")
                received = len(latencies_ms(probe, run["start"], run["stamps"]))
                status = node_figures(probe, fused_before + received, timeout=30)
                row = summarise(phase, size, rate, run, probe, before, status)
                if phase != "lockstep" and received < args.frames:
                    row["note"] = (f"only {received} pairs fused in this phase: the node's p50/p99 also cover"
                                   f" {args.frames - received} frames of the phase before")
                rows.append(row)
                print(f"  {label} {phase}: e2e p50 {fmt(row['e2e_p50_ms'])} ms, p99 {fmt(row['e2e_p99_ms'])} ms,"
                      f" model p50 {fmt(row['node_inference_p50_ms'])} ms, fused {received}/{run['published']}",
                      flush=True)
    finally:
        probe.close()
        node.stop()
        rclpy.try_shutdown()
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "node_latency_node.log").write_text("\n".join(node.output) + "\n")

    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(status), "args": {k: str(v) for k, v in vars(args).items()}}
    table = markdown(rows, info)
    (args.out / "node_latency.md").write_text(table)
    (args.out / "node_latency.json").write_text(json.dumps({**info, "rows": rows}, indent=2))
    print()
    print(table)
    goal = [r for r in rows if r["size"] == "640x512" and r["phase"] == "saturate"]
    if goal:
        best = goal[0]
        print(f"640x512: {fmt(best['fused_hz'])} fused Hz at saturation; at {args.rate:.0f} Hz cameras e2e p99 "
              f"{fmt(next((r['e2e_p99_ms'] for r in rows if r['size'] == '640x512' and r['phase'] == 'stream'), None))}"
              " ms (goal on an H100: >= 60 Hz, p99 <= 20 ms)")
    print(f"wrote {args.out / 'node_latency.md'}, node_latency.json and node_latency_node.log")
    return 0


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


if __name__ == "__main__":
    sys.exit(main())
