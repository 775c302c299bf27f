"""Every parameter of the fusion node, declared in one table, read into one typed settings object.

config/diffmf.yaml carries the same names and defaults with comments (a test keeps the
two in step). The table is plain data, so this module imports rclpy only inside
:func:`declare_parameters`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .registration import MODES as REGISTRATION_MODES
from .thermal import ThermalSettings

NODE_NAME = "diffmf_fusion"

OUTPUT_ENCODINGS = ("mono8", "bgr8", "rgb8")
TRANSPORTS = ("raw", "compressed")
SYNC_BACKENDS = ("diffmf", "message_filters")
RELIABILITIES = ("reliable", "best_effort")
IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]

# name -> (default, description). Defaults are what a plain `diffmf_node` runs with.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "autostart": (True, "configure and activate on start (no lifecycle manager needed)"),
    "thermal.topic": ("thermal/image_raw", "thermal image topic (relative: namespaces and remaps apply)"),
    "thermal.transport": ("raw", "raw: sensor_msgs/Image; compressed: CompressedImage on <topic>/compressed"),
    "visible.topic": ("visible/image_raw", "visible image topic"),
    "visible.transport": ("raw", "raw or compressed, as for thermal"),
    "output.topic": ("fused/image_raw", "fused image topic"),
    "output.encoding": ("bgr8", "mono8, or bgr8/rgb8 with the visible colour restored"),
    "output.reference": ("visible", "camera whose header stamp (and frame_id) the fused image carries"),
    "output.frame_id": ("", "frame_id of the fused image; empty: the reference camera's frame_id"),
    "output.debug": (False, "also publish thermal | visible | fused side by side"),
    "output.debug_topic": ("fused/debug", "side-by-side debug topic"),
    "model.checkpoint": ("", "weights file (.safetensors); empty: the shipped default weights"),
    "model.preset": ("tiny", "model preset when no checkpoint names one"),
    "model.device": ("auto", "auto, cpu, cuda, cuda:1, ..."),
    "model.dtype": ("auto", "auto, float32, bfloat16, float16"),
    "model.warmup_width": (640, "warm-up frame width (the expected camera size); 0 skips warm-up"),
    "model.warmup_height": (512, "warm-up frame height"),
    "sync.backend": ("diffmf", "diffmf (real-time pairer) or message_filters (where installed)"),
    "sync.slop": (0.02, "largest stamp difference of a pair, seconds"),
    "sync.queue_size": (5, "frames kept per camera while waiting for a partner"),
    "sync.max_age": (0.5, "drop pairs older than this on the node clock, seconds; 0: never"),
    "sync.clock_jump_tolerance": (1.0, "a clock or stamp going back further than this resets the queues, s"),
    "qos.input.reliability": ("best_effort", "reliable or best_effort (sensor-data default)"),
    "qos.input.depth": (5, "subscription history depth"),
    "qos.output.reliability": ("reliable", "reliable or best_effort"),
    "qos.output.depth": (5, "publisher history depth"),
    "thermal_normalisation.mode": ("auto", "auto, none, fixed, percentile or temperature"),
    "thermal_normalisation.fixed_min": (0.0, "fixed mode: raw value shown black"),
    "thermal_normalisation.fixed_max": (65535.0, "fixed mode: raw value shown white"),
    "thermal_normalisation.percentile_low": (1.0, "percentile mode: low percentile shown black"),
    "thermal_normalisation.percentile_high": (99.0, "percentile mode: high percentile shown white"),
    "thermal_normalisation.smoothing": (0.0, "percentile mode: 0 = per frame, towards 1 = slow range changes"),
    "thermal_normalisation.temperature_scale": (0.01, "temperature mode: degrees per raw count"),
    "thermal_normalisation.temperature_offset": (-273.15, "temperature mode: degrees at raw 0"),
    "thermal_normalisation.temperature_min": (0.0, "temperature mode: degrees shown black"),
    "thermal_normalisation.temperature_max": (60.0, "temperature mode: degrees shown white"),
    "registration.mode": ("none", "none, resize or homography (thermal into the visible frame)"),
    "registration.homography": (IDENTITY, "3x3 row-major, thermal pixels -> visible pixels"),
    "health.camera_timeout": (1.0, "a camera silent this long (s) is reported as lost"),
    "health.passthrough": (True, "while one camera is lost, publish the other on the fused topic"),
    "health.diagnostics_period": (1.0, "seconds between /diagnostics messages"),
    "health.summary_period": (5.0, "seconds between one-line log summaries; 0: none"),
    "health.stats_window": (300, "how many recent frames the p50/p99 figures cover"),
    "limits.max_image_pixels": (4096 * 4096, "frames with more pixels are dropped before conversion"),
}


@dataclass(frozen=True)
class CameraSettings:
    topic: str
    transport: str

    @property
    def subscribed_topic(self) -> str:
        """image_transport's naming: compressed frames travel on ``<topic>/compressed``."""
        return self.topic if self.transport == "raw" else f"{self.topic.rstrip('/')}/compressed"


@dataclass(frozen=True)
class NodeSettings:
    thermal: CameraSettings
    visible: CameraSettings
    output_topic: str
    output_encoding: str
    reference: str
    frame_id: str
    debug: bool
    debug_topic: str
    checkpoint: str
    preset: str
    device: str
    dtype: str
    warmup_width: int
    warmup_height: int
    sync_backend: str
    slop: float
    queue_size: int
    max_age: float
    clock_jump_tolerance: float
    input_reliability: str
    input_depth: int
    output_reliability: str
    output_depth: int
    thermal_normalisation: ThermalSettings
    registration_mode: str
    homography: list[float] = field(default_factory=lambda: list(IDENTITY))
    camera_timeout: float = 1.0
    passthrough: bool = True
    diagnostics_period: float = 1.0
    summary_period: float = 5.0
    stats_window: int = 300
    max_image_pixels: int = 4096 * 4096


def _choice(values: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = str(values[name])
    if value not in choices:
        raise ValueError(f"parameter {name}: '{value}' is not one of {', '.join(choices)}")
    return value


def _number(values: dict[str, Any], name: str, kind: type = float, minimum: float | None = None,
            strictly: bool = False) -> Any:
    """values[name] as int/float (ints accepted for floats), at or above ``minimum``."""
    raw = values[name]
    try:
        if isinstance(raw, (bool, str)):
            raise TypeError
        value = kind(raw)
        if kind is int and value != raw:
            raise TypeError
    except (TypeError, ValueError):
        wanted = "an integer" if kind is int else "a number"
        raise ValueError(f"parameter {name}: expected {wanted}, got {raw!r}") from None
    if minimum is not None and (value < minimum or (strictly and value == minimum)):
        raise ValueError(f"parameter {name}: must be {'>' if strictly else '>='} {minimum}, got {value}")
    return value


def _text(values: dict[str, Any], name: str, allow_empty: bool = True) -> str:
    value = values[name]
    if not isinstance(value, str):
        raise ValueError(f"parameter {name}: expected a string, got {value!r}")
    if not allow_empty and not value.strip():
        raise ValueError(f"parameter {name}: must not be empty")
    return value


def _flag(values: dict[str, Any], name: str) -> bool:
    value = values[name]
    if not isinstance(value, bool):
        raise ValueError(f"parameter {name}: expected true or false, got {value!r}")
    return value


def settings_from_values(values: dict[str, Any]) -> NodeSettings:
    """Validate raw parameter values (missing ones take the defaults); ValueError names the parameter."""
    unknown = sorted(set(values) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
    v = {name: values.get(name, default) for name, (default, _) in PARAMETERS.items()}
    prefix = "thermal_normalisation."
    thermal = ThermalSettings(
        mode=_text(v, prefix + "mode"),
        **{
            name[len(prefix):]: _number(v, name)
            for name in PARAMETERS
            if name.startswith(prefix) and name != prefix + "mode"
        },
    )
    try:
        thermal.validate()
    except ValueError as exc:
        raise ValueError(f"parameter {prefix}*: {exc}") from None
    raw_homography = v["registration.homography"]
    if isinstance(raw_homography, (str, bytes)) or not hasattr(raw_homography, "__len__") or len(raw_homography) != 9:
        raise ValueError(f"parameter registration.homography: needs 9 numbers (3x3 row-major), got {raw_homography!r}")
    homography = [_number({"registration.homography": x}, "registration.homography") for x in raw_homography]
    return NodeSettings(
        thermal=CameraSettings(_text(v, "thermal.topic", False), _choice(v, "thermal.transport", TRANSPORTS)),
        visible=CameraSettings(_text(v, "visible.topic", False), _choice(v, "visible.transport", TRANSPORTS)),
        output_topic=_text(v, "output.topic", False),
        output_encoding=_choice(v, "output.encoding", OUTPUT_ENCODINGS),
        reference=_choice(v, "output.reference", ("visible", "thermal")),
        frame_id=_text(v, "output.frame_id"),
        debug=_flag(v, "output.debug"),
        debug_topic=_text(v, "output.debug_topic", False),
        checkpoint=_text(v, "model.checkpoint"),
        preset=_text(v, "model.preset", False),
        device=_text(v, "model.device", False),
        dtype=_text(v, "model.dtype", False),
        warmup_width=_number(v, "model.warmup_width", int, 0),
        warmup_height=_number(v, "model.warmup_height", int, 0),
        sync_backend=_choice(v, "sync.backend", SYNC_BACKENDS),
        slop=_number(v, "sync.slop", float, 0),
        queue_size=_number(v, "sync.queue_size", int, 1),
        max_age=_number(v, "sync.max_age", float, 0),
        clock_jump_tolerance=_number(v, "sync.clock_jump_tolerance", float, 0),
        input_reliability=_choice(v, "qos.input.reliability", RELIABILITIES),
        input_depth=_number(v, "qos.input.depth", int, 1),
        output_reliability=_choice(v, "qos.output.reliability", RELIABILITIES),
        output_depth=_number(v, "qos.output.depth", int, 1),
        thermal_normalisation=thermal,
        registration_mode=_choice(v, "registration.mode", REGISTRATION_MODES),
        homography=homography,
        camera_timeout=_number(v, "health.camera_timeout", float, 0, strictly=True),
        passthrough=_flag(v, "health.passthrough"),
        diagnostics_period=_number(v, "health.diagnostics_period", float, 0, strictly=True),
        summary_period=_number(v, "health.summary_period", float, 0),
        stats_window=_number(v, "health.stats_window", int, 1),
        max_image_pixels=_number(v, "limits.max_image_pixels", int, 1),
    )


def declare_parameters(node: Any) -> None:
    """Declare the whole table on an rclpy node (values from --params-file / -p override the defaults)."""
    from rcl_interfaces.msg import ParameterDescriptor

    node.declare_parameters(
        "",
        [
            # dynamic typing: a YAML `slop: 1` or an integer homography must not abort the node
            # with a type error; settings_from_values checks every value and names the bad one.
            (name, default, ParameterDescriptor(description=text, dynamic_typing=True))
            for name, (default, text) in PARAMETERS.items()
        ],
    )


def read_settings(node: Any) -> NodeSettings:
    """The node's current parameter values as validated settings."""
    return settings_from_values({name: node.get_parameter(name).value for name in PARAMETERS})
