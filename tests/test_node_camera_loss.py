"""One camera falls silent and comes back: one warning, diagnostics ERROR, pass-through, recovery."""

import time

import pytest

rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from diffmf_ros.node import FusionNode, stamp_to_ns  # noqa: E402
from diffmf_ros.probe import BackgroundNode, FusionProbe, synthetic_pair  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

H, W = 32, 48
NODE = "loss_fusion"
PARAMS = {
    "model.warmup_width": W,
    "model.warmup_height": H,
    "qos.input.reliability": "reliable",
    "qos.input.depth": 10,
    "sync.max_age": 30.0,
    "health.camera_timeout": 0.6,
    "health.passthrough": True,
    "health.diagnostics_period": 0.3,
}


@pytest.fixture(scope="module")
def rig():
    context = rclpy.context.Context()  # a context of our own: other test modules' ROS state cannot interfere
    rclpy.init(context=context)
    node = FusionNode(NODE, context=context, parameter_overrides=[Parameter(k, value=v) for k, v in PARAMS.items()])
    background = BackgroundNode(node)
    probe = FusionProbe("loss_probe", context=context)
    try:
        assert probe.wait_for_subscribers(timeout=120), node.configure_error
        yield probe
    finally:
        probe.close()
        background.close()
        rclpy.shutdown(context=context)


def _stamp(msg):
    return stamp_to_ns(msg.header.stamp)


def _publish_until(probe, streams, done, timeout, period=0.15):
    """Keep the given cameras running until ``done()``; returns whether it happened in time."""
    thermal, visible = synthetic_pair(H, W)
    frames = {"thermal": thermal, "visible": visible}
    deadline = time.monotonic() + timeout
    published = []
    while time.monotonic() < deadline:
        stamp = time.time_ns()
        for stream in streams:
            probe.publish(stream, probe.make_msg(stream, frames[stream], stamp))
        published.append(stamp)
        if probe.wait_for(done, period):
            return published
    return None


def test_silent_camera_warns_once_reports_error_passes_through_and_recovers(rig):
    probe = rig
    assert _publish_until(probe, ("thermal", "visible"), lambda: probe.fused_count >= 1, timeout=90)

    # The thermal camera stops; the visible camera goes on alone.
    before = probe.fused_count
    visible_only = _publish_until(
        probe, ("visible",),
        lambda: any(d.get("lost_cameras") == "thermal" and int(d["passed_through"]) >= 2
                    for d in probe.diagnostics),
        timeout=60,
    )
    assert visible_only, f"no pass-through reported: {probe.diagnostics[-1:]}"
    lost = next(d for d in probe.diagnostics if d.get("lost_cameras") == "thermal")
    assert lost["level"] == 2 and "no frames from thermal" in lost["message"]
    passed = [r.msg for r in probe.fused[before:] if _stamp(r.msg) in visible_only]
    assert passed, "the visible camera was not passed through on the fused topic"
    assert (passed[-1].height, passed[-1].width, passed[-1].encoding) == (H, W, "bgr8")
    assert passed[-1].header.frame_id == "visible_optical_frame"

    # The thermal camera returns: fusing resumes and diagnostics clear.
    fused_before = int(probe.diagnostics[-1]["fused"])
    assert _publish_until(
        probe, ("thermal", "visible"),
        lambda: any(d.get("lost_cameras") == "" and int(d["fused"]) > fused_before
                    for d in probe.diagnostics[-3:]),
        timeout=60,
    ), f"no recovery: {probe.diagnostics[-1:]}"
    assert probe.wait_for(lambda: probe.log_lines(NODE, "thermal camera back"), 10)

    warnings = probe.log_lines(NODE, "thermal camera lost", level=Log.WARN)
    assert len(warnings) == 1, warnings
    assert "publishing the visible camera alone" in warnings[0]
