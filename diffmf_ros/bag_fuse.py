"""diffmf_bag: fuse the thermal and visible topics of a ROS 2 bag offline, no ROS install needed.

    diffmf_bag drive.mcap_dir --thermal /thermal/image_raw --visible /visible/image_raw \\
        --output drive_fused [--video fused.mp4] [--png-dir frames/] [--copy-topics]

Frames are paired by header stamp with the node's own pairer (:mod:`diffmf_ros.sync`), so a
bag fused here pairs exactly like a live run; unlike the node nothing is dropped for being
late (there is no real-time deadline offline): every pair is fused. The thermal frames go
through the node's normalisation and registration before the FusionEngine.

Settings (sync, thermal normalisation, registration, output encoding) default to the node's
parameter defaults; ``--params-file config/diffmf.yaml`` reads the node's own parameter file,
and the command-line options override either.

A bad bag (missing topic, wrong type, truncated file or message) stops the run with a
one-line reason and exit code 2; the output bag is closed properly first, so it holds
every message written before the failure.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from .bag_io import (
    IMAGE_TYPES,
    NS_PER_S,
    STORAGES,
    BagError,
    BagReader,
    BagTopicError,
    BagWriter,
    decode_image,
    header_stamp_ns,
)
from .frames import to_output
from .fused_outputs import BagSink, FrameSink, PngSink, VideoSink
from .image_conversion import ImageConversionError
from .params import NODE_NAME, OUTPUT_ENCODINGS, NodeSettings, settings_from_values
from .registration import MODES as REGISTRATION_MODES
from .registration import Registration, RegistrationError
from .sync import ApproximateTimePairer, Pair
from .thermal import MODES as THERMAL_MODES
from .thermal import ThermalNormaliser, ThermalSettings

__all__ = ["FuseOptions", "FuseSummary", "PairFuser", "fuse_bag", "main"]

EXIT_BAD_BAG = 2
NODE_DEFAULTS: NodeSettings = settings_from_values({})


@dataclass
class FuseOptions:
    """What to fuse and how; the defaults are the node's parameter defaults."""

    thermal_topic: str
    visible_topic: str
    fused_topic: str = "/fused/image_raw"
    slop: float = NODE_DEFAULTS.slop
    queue_size: int = NODE_DEFAULTS.queue_size
    reference: str = NODE_DEFAULTS.reference
    encoding: str = NODE_DEFAULTS.output_encoding
    frame_id: str = NODE_DEFAULTS.frame_id  # empty: the reference camera's frame_id
    thermal: ThermalSettings = field(default_factory=lambda: NODE_DEFAULTS.thermal_normalisation)
    registration: str = NODE_DEFAULTS.registration_mode
    homography: Sequence[float] | None = None
    copy_topics: list[str] | None = None  # None: copy nothing; []: copy every topic
    storage: str | None = None  # None: the input bag's
    max_pixels: int | None = NODE_DEFAULTS.max_image_pixels

    @classmethod
    def from_node_settings(cls, settings: NodeSettings, thermal_topic: str, visible_topic: str,
                           **overrides: Any) -> FuseOptions:
        """The node's sync, normalisation, registration and output settings, for the given topics."""
        values = dict(
            slop=settings.slop, queue_size=settings.queue_size, reference=settings.reference,
            encoding=settings.output_encoding, frame_id=settings.frame_id,
            thermal=settings.thermal_normalisation, registration=settings.registration_mode,
            homography=list(settings.homography), max_pixels=settings.max_image_pixels,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(thermal_topic=thermal_topic, visible_topic=visible_topic, **values)


@dataclass
class FuseSummary:
    """What a run did; ``lines()`` is the end-of-run report."""

    read: collections.Counter = field(default_factory=collections.Counter)
    pairs: int = 0
    fused: int = 0
    copied: int = 0
    drops: collections.Counter = field(default_factory=collections.Counter)
    seconds: float = 0.0
    model_seconds: list[float] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.fused / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        read = ", ".join(f"{k} {v}" for k, v in sorted(self.read.items())) or "nothing"
        drops = ", ".join(f"{k} {v}" for k, v in sorted(self.drops.items())) or "none"
        model = ""
        if self.model_seconds:
            p50, p99 = np.percentile(np.asarray(self.model_seconds) * 1e3, (50, 99))
            model = f", model p50 {p50:.1f} ms p99 {p99:.1f} ms"
        lines = [
            f"read: {read}",
            f"pairs: {self.pairs}, fused: {self.fused}, copied messages: {self.copied}",
            f"drops: {drops}",
            f"speed: {self.fps:.2f} fused frames/s over {self.seconds:.1f} s{model}",
        ]
        lines += [f"wrote: {o}" for o in self.outputs]
        return lines


class PairFuser:
    """One pair -> one fused frame, the node's way: normalise thermal, register, fuse, encode."""

    def __init__(self, engine: Any, options: FuseOptions) -> None:
        if options.encoding not in OUTPUT_ENCODINGS:
            raise ValueError(f"output encoding '{options.encoding}' is not one of {', '.join(OUTPUT_ENCODINGS)}")
        self.engine = engine
        self.encoding = options.encoding
        self.normalise = ThermalNormaliser(options.thermal)
        self.register = Registration(options.registration, options.homography)

    def __call__(self, thermal: np.ndarray, visible: np.ndarray) -> np.ndarray:
        fused = self.engine.fuse(self.register(self.normalise(thermal), visible.shape), visible)
        return to_output(fused, self.encoding)


def _video_fps(bag: BagReader, topic: str) -> float:
    """The reference camera's mean frame rate in the bag (10 Hz if it cannot be told)."""
    info = bag.topics()[bag.connection(topic).topic]
    span = (bag.end_ns - bag.start_ns) / NS_PER_S
    return (info.count - 1) / span if info.count > 1 and span > 0 else 10.0


def fuse_bag(
    input_bag: str | Path,
    options: FuseOptions,
    engine: Any,
    output_bag: str | Path | None = None,
    video: str | Path | None = None,
    png_dir: str | Path | None = None,
    video_fps: float | None = None,
    progress: bool | None = None,
) -> FuseSummary:
    """Fuse ``input_bag`` into the outputs given; raises BagError (outputs closed) for a bad bag.

    ``engine``: anything with ``fuse(ir, vi) -> uint8 array`` (a diffmf_core.FusionEngine).
    ``progress``: tqdm bar on/off; None shows it on a terminal only.
    """
    if output_bag is None and video is None and png_dir is None:
        raise ValueError("nothing to write: give an output bag, a video file or a PNG folder")
    if options.copy_topics is not None and output_bag is None:
        raise ValueError("copying topics needs an output bag")
    summary = FuseSummary()
    fuser = PairFuser(engine, options)
    pairer = ApproximateTimePairer(options.slop, options.queue_size, options.reference)
    sinks: list[FrameSink] = []
    out: BagWriter | None = None
    start = time.perf_counter()
    with BagReader(input_bag) as bag:
        streams = {
            "thermal": bag.connection(options.thermal_topic, IMAGE_TYPES),
            "visible": bag.connection(options.visible_topic, IMAGE_TYPES),
        }
        reference_topic = streams[options.reference].topic
        by_id = {}
        for name, conn in streams.items():
            for c in bag.connections_of(conn.topic):
                by_id[c.id] = name
        copy = _copy_connections(bag, options)
        if any(_same_topic(c.topic, options.fused_topic) for c in copy):
            raise BagTopicError(bag.path, f"fused topic '{options.fused_topic}' is also a copied topic; pick another")
        try:
            if output_bag is not None:
                out = BagWriter(output_bag, options.storage or bag.storage)
                out.open()
                copied_to = {c.id: out.add_topic(c.topic, c.msgtype, like=c) for c in copy}
                sinks.append(BagSink(out, options.fused_topic, options.encoding))
                summary.outputs.append(f"{output_bag} ({out.storage}, topic {options.fused_topic})")
            if video is not None:
                sinks.append(VideoSink(video, video_fps or _video_fps(bag, reference_topic)))
                summary.outputs.append(str(video))
            if png_dir is not None:
                sinks.append(PngSink(png_dir))
                summary.outputs.append(f"{png_dir}/")
            copy_ids = {c.id for c in copy}
            wanted = [c for c in bag.reader.connections if c.id in by_id or c.id in copy_ids]
            total = sum(c.msgcount for c in wanted)
            # tqdm: disable=None hides the bar when stderr is not a terminal.
            with tqdm(total=total, unit="msg", desc="diffmf_bag", dynamic_ncols=True,
                      disable=None if progress is None else not progress) as bar:
                for conn, log_ns, raw in bag.messages(wanted):
                    bar.update(1)
                    if conn.id in copy_ids:
                        out.write(copied_to[conn.id], log_ns, raw)
                        summary.copied += 1
                    if conn.id not in by_id:
                        continue
                    stream = by_id[conn.id]
                    message = bag.deserialize(raw, conn, log_ns)
                    summary.read[stream] += 1
                    try:
                        frame = decode_image(message, conn.msgtype, options.max_pixels)
                    except ImageConversionError as exc:
                        summary.drops[f"{stream}_{exc.reason}"] += 1
                        continue
                    payload = (frame, message.header.frame_id)
                    for pair in pairer.push(stream, header_stamp_ns(message), payload):
                        summary.pairs += 1
                        _fuse_pair(pair, log_ns, fuser, options, sinks, summary)
                    bar.set_postfix(fused=summary.fused, refresh=False)
        except BagError as exc:
            exc.summary = summary  # what was done before the failure, for the report
            raise
        finally:
            summary.seconds = time.perf_counter() - start
            pairer.finish()
            for reason, count in pairer.drops.items():
                summary.drops[reason] = count
            _close_all(sinks, out)
    return summary


def _copy_connections(bag: BagReader, options: FuseOptions) -> list:
    """Input connections to copy unchanged: none, all (empty list), or those of the named topics."""
    if options.copy_topics is None:
        return []
    if not options.copy_topics:
        return list(bag.reader.connections)
    wanted = []
    for topic in options.copy_topics:
        first = bag.connection(topic, allowed_types=[c.msgtype for c in bag.reader.connections])
        wanted += [c for c in bag.connections_of(first.topic) if c not in wanted]
    return wanted


def _same_topic(a: str, b: str) -> bool:
    return a.lstrip("/") == b.lstrip("/")


def _fuse_pair(pair: Pair, log_ns: int, fuser: PairFuser, options: FuseOptions, sinks: list[FrameSink],
               summary: FuseSummary) -> None:
    (thermal, ir_frame_id), (visible, vi_frame_id) = pair.ir, pair.vi
    started = time.perf_counter()
    try:
        fused = fuser(thermal, visible)
    except RegistrationError as exc:
        summary.drops[exc.reason] += 1
        return
    except ValueError:  # the engine refusing a frame (as the node, count it and go on)
        summary.drops["fusion_error"] += 1
        return
    summary.model_seconds.append(time.perf_counter() - started)
    frame_id = options.frame_id or (vi_frame_id if options.reference == "visible" else ir_frame_id)
    for sink in sinks:
        sink.write(fused, pair.stamp_ns, log_ns, frame_id)
    summary.fused += 1


def _close_all(sinks: list[FrameSink], out: BagWriter | None) -> None:
    """Close everything, even if one close fails; re-raise the first failure afterwards."""
    first: BaseException | None = None
    for closer in [s.close for s in sinks] + ([out.close] if out is not None else []):
        try:
            closer()
        except Exception as exc:  # keep closing the rest; report the first problem
            first = first or exc
    if first is not None:
        raise first


# -- command line --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    d = NODE_DEFAULTS
    p = argparse.ArgumentParser(
        prog="diffmf_bag",
        description="Fuse the thermal and visible image topics of a ROS 2 bag (sqlite3 or mcap) offline."
        " Fusion settings default to the node's (see --params-file); options given here override them.",
    )
    p.add_argument("input", metavar="IN_BAG", help="input bag: a rosbag2 folder, or a single .db3/.mcap file")
    p.add_argument("--thermal", required=True, metavar="TOPIC", help="thermal topic (Image or CompressedImage)")
    p.add_argument("--visible", required=True, metavar="TOPIC", help="visible topic (Image or CompressedImage)")
    p.add_argument("--output", metavar="OUT_BAG", help="output bag folder to create (holds the fused topic)")
    p.add_argument("--fused-topic", default="/fused/image_raw", metavar="TOPIC", help="fused topic in the output bag")
    p.add_argument("--video", metavar="FILE", help="also write the fused stream as an MP4 (mp4v)")
    p.add_argument("--video-fps", type=float, metavar="HZ", help="video frame rate (default: the bag's camera rate)")
    p.add_argument("--png-dir", metavar="DIR", help="also write every fused frame as a PNG into DIR")
    p.add_argument("--copy-topics", nargs="*", metavar="TOPIC",
                   help="copy these input topics into the output bag unchanged (no TOPIC: copy all of them)")
    p.add_argument("--storage", choices=sorted(STORAGES), help="output storage plugin (default: the input's)")
    p.add_argument("--params-file", metavar="YAML",
                   help="the node's parameter file (e.g. config/diffmf.yaml): its model, sync, normalisation,"
                   " registration and output settings become the defaults here")
    p.add_argument("--checkpoint", metavar="FILE", help="model weights (.safetensors); default: the shipped ones")
    p.add_argument("--preset", help=f"model preset when the checkpoint does not say (default {d.preset})")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default auto: CUDA if available)")
    p.add_argument("--slop", type=float, help=f"max stamp difference of a pair, seconds (default {d.slop})")
    p.add_argument("--queue-size", type=int, help=f"frames kept per camera while pairing (default {d.queue_size})")
    p.add_argument("--reference", choices=("visible", "thermal"),
                   help=f"camera whose stamp and frame_id the fused frames get (default {d.reference})")
    p.add_argument("--frame-id", help="frame_id of the fused frames (default: the reference camera's)")
    p.add_argument("--encoding", choices=OUTPUT_ENCODINGS,
                   help=f"fused image encoding: bgr8/rgb8 keep the visible colour, mono8 is the fused intensity"
                   f" (default {d.output_encoding})")
    p.add_argument("--thermal-mode", choices=THERMAL_MODES,
                   help=f"16-bit thermal normalisation (default {d.thermal_normalisation.mode}:"
                   " per-frame percentile stretch for 16-bit)")
    p.add_argument("--thermal-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                   help="raw range for --thermal-mode fixed, degrees C for --thermal-mode temperature")
    p.add_argument("--registration", choices=REGISTRATION_MODES,
                   help=f"thermal into the visible grid: none, resize or homography (default {d.registration_mode})")
    p.add_argument("--homography", nargs=9, type=float, metavar="H",
                   help="3x3 thermal->visible homography, row-major (with --registration homography)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def read_params_file(path: str | Path) -> NodeSettings:
    """The node's settings from a ROS 2 parameter file (its ``/**`` or ``diffmf_fusion`` entry), validated."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the parameter file ({' '.join(str(exc).split())})") from None
    entries = {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}
    entry = next((v for k, v in entries.items() if k.split("/")[-1] in ("**", NODE_NAME)), None)
    if not isinstance(entry, dict) or not isinstance(entry.get("ros__parameters"), dict):
        raise ValueError(f"{path}: no '/**' or '{NODE_NAME}' entry with ros__parameters")
    values: dict[str, Any] = {}

    def flatten(prefix: str, node: dict) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                flatten(f"{prefix}{key}.", value)
            else:
                values[f"{prefix}{key}"] = value

    flatten("", entry["ros__parameters"])
    values.pop("use_sim_time", None)  # a node-wide ROS parameter, not one of the fusion settings
    try:
        return settings_from_values(values)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _thermal_settings(args: argparse.Namespace, base: ThermalSettings) -> ThermalSettings:
    settings = base if args.thermal_mode is None else dataclasses.replace(base, mode=args.thermal_mode)
    if args.thermal_range is not None:
        low, high = args.thermal_range
        if settings.mode == "fixed":
            settings = dataclasses.replace(settings, fixed_min=low, fixed_max=high)
        elif settings.mode == "temperature":
            settings = dataclasses.replace(settings, temperature_min=low, temperature_max=high)
        else:
            raise ValueError("--thermal-range needs --thermal-mode fixed or temperature")
    settings.validate()
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s")
    if not (args.output or args.video or args.png_dir):
        parser.error("nothing to write: give --output, --video and/or --png-dir")
    if args.copy_topics is not None and not args.output:
        parser.error("--copy-topics needs --output")
    try:
        node = read_params_file(args.params_file) if args.params_file else NODE_DEFAULTS
        options = FuseOptions.from_node_settings(
            node, args.thermal, args.visible, fused_topic=args.fused_topic, slop=args.slop,
            queue_size=args.queue_size, reference=args.reference, encoding=args.encoding, frame_id=args.frame_id,
            thermal=_thermal_settings(args, node.thermal_normalisation), registration=args.registration,
            homography=args.homography, copy_topics=args.copy_topics, storage=args.storage,
        )
        Registration(options.registration, options.homography)  # fail on a bad homography before loading
        ApproximateTimePairer(options.slop, options.queue_size, options.reference)
    except ValueError as exc:
        parser.error(str(exc))
    if args.output and Path(args.output).exists():
        print(f"diffmf_bag: error: {args.output}: already exists; not overwriting", file=sys.stderr)
        return EXIT_BAD_BAG
    try:
        with BagReader(args.input) as bag:  # check the bag and its topics before loading the model
            bag.connection(args.thermal)
            bag.connection(args.visible)
    except BagError as exc:
        print(f"diffmf_bag: error: {exc}", file=sys.stderr)
        return EXIT_BAD_BAG

    from diffmf_core import FusionEngine

    device = args.device or node.device
    engine = FusionEngine(checkpoint=args.checkpoint or node.checkpoint or None, preset=args.preset or node.preset,
                          device=None if device == "auto" else device,
                          dtype=None if node.dtype == "auto" else node.dtype)
    print(f"diffmf_bag: model {engine.describe()}", file=sys.stderr)
    try:
        summary = fuse_bag(args.input, options, engine, output_bag=args.output, video=args.video,
                           png_dir=args.png_dir, video_fps=args.video_fps,
                           progress=False if args.no_progress else None)
    except BagError as exc:
        done = getattr(exc, "summary", None)
        for line in done.lines() if done is not None else []:
            print(line)
        print(f"diffmf_bag: error: {exc} (outputs written so far are closed and valid)", file=sys.stderr)
        return EXIT_BAD_BAG
    except KeyboardInterrupt:
        print("diffmf_bag: interrupted (outputs written so far are closed and valid)", file=sys.stderr)
        return 130
    for line in summary.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
