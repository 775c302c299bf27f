"""End to end across a process boundary: `python -m diffmf_ros.node --params-file ...` under sim time.

The test process is the camera rig (mono16 thermal, bgr8 visible, /clock); the node runs
in a child process loaded from the shipped config plus an override file. Every bad input
the issue lists is dropped, counted in /diagnostics, logged once, and fusing goes on.
"""

import itertools
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.msg import Log  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from diffmf_ros.probe import FusionProbe, NodeProcess, synthetic_pair  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CONFIG = Path(__file__).resolve().parents[1] / "config" / "diffmf.yaml"
H, W = 32, 48
NODE = "e2e_fusion"
SKEW_NS = 5_000_000  # thermal 5 ms after visible: inside the default 20 ms slop
MAX_PIXELS = H * W * 4
OVERRIDES = f"""
/**:
  ros__parameters:
    use_sim_time: true
    output:
      frame_id: fused_optical_frame
    model:
      warmup_width: {W}
      warmup_height: {H}
    qos:
      input:
        reliability: reliable
        depth: 20
    sync:
      max_age: 5.0
    limits:
      max_image_pixels: {MAX_PIXELS}
    health:
      camera_timeout: 30.0
"""


class SimClock:
    """Stamps that move forward 100 ms per frame, published on /clock before each use."""

    def __init__(self, probe, start_s=1000):
        self.probe = probe
        self.ns = start_s * 1_000_000_000

    def tick(self):
        self.ns += 100_000_000
        self.probe.publish_clock(self.ns)
        return self.ns


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    override = tmp_path_factory.mktemp("params") / "e2e.yaml"
    override.write_text(OVERRIDES)
    context = rclpy.context.Context()  # a context of our own: other test modules' ROS state cannot interfere
    rclpy.init(context=context)
    node = NodeProcess([str(CONFIG), str(override)], name=NODE)
    probe = FusionProbe("e2e_probe", context=context)
    try:
        if not probe.wait_for_subscribers(timeout=180):
            pytest.fail(f"the node never subscribed; its output:\n{node.tail()}")
        yield probe, SimClock(probe), node
    finally:
        probe.close()
        code = node.stop()
        rclpy.shutdown(context=context)
    assert code == 0, f"the node did not shut down cleanly on SIGINT:\n{node.tail()}"


def _fuse_one(probe, clock, index=0, timeout=90):
    """Publish one good pair and wait for its fused image; returns (visible stamp, fused message)."""
    stamp = clock.tick()
    thermal, visible = synthetic_pair(H, W, index)
    expected = probe.fused_count + 1
    probe.publish("visible", probe.make_msg("visible", visible, stamp))
    probe.publish("thermal", probe.make_msg("thermal", thermal, stamp + SKEW_NS))
    assert probe.wait_for(lambda: any(_ns(r.msg) == stamp for r in probe.fused), timeout), (
        f"no fused frame for the pair stamped {stamp} (fused so far: {probe.fused_count}, wanted {expected})"
    )
    return stamp, next(r.msg for r in probe.fused if _ns(r.msg) == stamp)


def _ns(msg):
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_fused_images_carry_the_reference_stamp_size_encoding_and_frame_id(rig):
    probe, clock, _ = rig
    for index in range(3):
        stamp, fused = _fuse_one(probe, clock, index)
        assert _ns(fused) == stamp  # the visible camera's stamp, not the thermal one, never now()
        assert (fused.height, fused.width, fused.encoding) == (H, W, "bgr8")
        assert fused.header.frame_id == "fused_optical_frame"
        pixels = np.frombuffer(fused.data, np.uint8).reshape(H, W, 3)
        assert pixels.std() > 0  # an image, not a blank buffer


def _bad_messages(probe, clock):
    """(reason, stream, message) for each bad single-frame input."""
    thermal, visible = synthetic_pair(H, W)
    cases = []

    def msg(stream, pixels, **fields):
        m = probe.make_msg(stream, pixels, clock.tick())
        for key, value in fields.items():
            setattr(m, key, value)
        return m

    cases.append(("unsupported_encoding", "thermal", msg("thermal", thermal, encoding="yuv422")))
    short = msg("thermal", thermal)
    short.data = bytes(short.data)[: len(short.data) // 2]
    cases.append(("short_data", "thermal", short))
    zero = Image(height=0, width=0, encoding="bgr8", step=0)
    zero.header.stamp = msg("visible", visible).header.stamp
    cases.append(("zero_size", "visible", zero))
    nan = thermal.astype(np.float32) / 65535.0
    nan[3, 4] = np.nan
    cases.append(("non_finite", "thermal", msg("thermal", nan)))
    big_thermal, _ = synthetic_pair(H * 3, W * 3)
    cases.append(("too_large", "thermal", msg("thermal", big_thermal)))
    return cases


def test_every_bad_input_is_dropped_counted_logged_once_and_fusing_goes_on(rig):
    probe, clock, _ = rig
    for _ in range(2):  # twice each: counted twice, logged once
        for _, stream, bad in _bad_messages(probe, clock):
            probe.publish(stream, bad)
        _fuse_one(probe, clock)

    # Sizes that differ without registration: only visible once paired, in the worker.
    small_thermal, _ = synthetic_pair(H // 2, W // 2)
    _, visible = synthetic_pair(H, W)
    for attempt in itertools.count(1):
        stamp = clock.tick()
        probe.publish("visible", probe.make_msg("visible", visible, stamp))
        probe.publish("thermal", probe.make_msg("thermal", small_thermal, stamp))
        if probe.wait_for_diagnostics(lambda d, n=attempt: int(d.get("drop.size_mismatch", 0)) >= n, 30) is None:
            pytest.fail("a size-mismatched pair was not counted in diagnostics")
        if attempt == 2:
            break
    _fuse_one(probe, clock)

    reasons = ["unsupported_encoding", "short_data", "zero_size", "non_finite", "too_large"]
    status = probe.wait_for_diagnostics(
        lambda d: all(int(d.get(f"drop.{r}", 0)) >= 2 for r in reasons + ["size_mismatch"]), timeout=30
    )
    assert status is not None, f"diagnostics never counted every reason: {probe.diagnostics[-1:]}"
    assert status["level"] in (0, 1)  # WARN while bad input arrives, never ERROR: both cameras are live

    phrases = {
        "unsupported_encoding": "unsupported encoding 'yuv422'",
        "short_data": "but step*height needs",
        "zero_size": "zero size",
        "non_finite": "NaN/Inf pixels",
        "too_large": f"above the limit of {MAX_PIXELS}",
        "size_mismatch": "differ in size",
    }
    for reason, phrase in phrases.items():
        lines = probe.log_lines(NODE, phrase, level=Log.WARN)
        first = [line for line in lines if "more like it" not in line]
        assert len(first) == 1, f"{reason}: expected one warning (then throttled summaries), got {lines}"


def test_a_clock_jumping_back_resets_the_queues_and_fusing_resumes(rig):
    probe, clock, _ = rig
    _fuse_one(probe, clock)
    before = probe.wait_for_diagnostics(lambda d: True, timeout=30)
    clock.ns -= 500 * 1_000_000_000  # the bag looped
    stamp, fused = _fuse_one(probe, clock, index=1)
    assert _ns(fused) == stamp
    status = probe.wait_for_diagnostics(
        lambda d: int(d["clock_jumps"]) > int(before["clock_jumps"]), timeout=30
    )
    assert status is not None
    lines = probe.log_lines(NODE, "time went backwards", level=Log.WARN)
    assert len([line for line in lines if "more like it" not in line]) == 1, lines
    _fuse_one(probe, clock, index=2)  # and it keeps going


def test_diagnostics_report_rates_latency_and_the_model(rig):
    probe, clock, _ = rig
    _fuse_one(probe, clock)
    status = probe.wait_for_diagnostics(lambda d: int(d["fused"]) > 0, timeout=30)
    assert status is not None
    for key in ("thermal_hz", "visible_hz", "inference_p50_ms", "inference_p99_ms", "latency_p50_ms",
                "overhead_p50_ms", "scan_backend", "scan_layout", "device", "dtype", "weights", "sync_backend"):
        assert status[key] not in ("", "nan"), key
    assert status["sync_backend"] == "diffmf"
