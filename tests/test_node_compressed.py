"""CompressedImage inputs (16-bit PNG thermal, JPEG visible), registration by resize, thermal as the
reference camera, mono8 output and the side-by-side debug topic. Node and camera rig talk over DDS."""

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from diffmf_ros.node import FusionNode, stamp_to_ns  # noqa: E402
from diffmf_ros.probe import BackgroundNode, FusionProbe, synthetic_pair  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

H, W = 32, 48  # visible size; thermal arrives at half of it
PARAMS = {
    "thermal.transport": "compressed",
    "visible.transport": "compressed",
    "output.encoding": "mono8",
    "output.reference": "thermal",
    "output.debug": True,
    "registration.mode": "resize",
    "model.warmup_width": W,
    "model.warmup_height": H,
    "qos.input.reliability": "reliable",
    "qos.input.depth": 10,
    "sync.max_age": 30.0,
    "health.camera_timeout": 30.0,
}


@pytest.fixture(scope="module")
def rig():
    context = rclpy.context.Context()  # a context of our own: other test modules' ROS state cannot interfere
    rclpy.init(context=context)
    overrides = [Parameter(k, value=v) for k, v in PARAMS.items()]
    node = FusionNode("compressed_fusion", context=context, parameter_overrides=overrides)
    background = BackgroundNode(node)
    probe = FusionProbe("compressed_probe", context=context, thermal_compressed=True, visible_compressed=True)
    debug = []
    probe.node.create_subscription(Image, "fused/debug", debug.append, QoSProfile(depth=10,
                                   reliability=ReliabilityPolicy.RELIABLE))
    try:
        assert probe.wait_for_subscribers(timeout=120), node.configure_error
        yield probe, debug
    finally:
        probe.close()
        background.close()
        rclpy.shutdown(context=context)


def _stamp(msg):
    return stamp_to_ns(msg.header.stamp)


def test_compressed_inputs_fuse_with_the_thermal_stamp(rig):
    probe, debug = rig
    thermal_stamps = []
    for index in range(2):
        visible_stamp = time.time_ns()
        thermal_stamp = visible_stamp + 3_000_000
        thermal, _ = synthetic_pair(H // 2, W // 2, index)
        _, visible = synthetic_pair(H, W, index)
        probe.publish("visible", probe.make_msg("visible", visible, visible_stamp, fmt="jpeg"))
        probe.publish("thermal", probe.make_msg("thermal", thermal, thermal_stamp, fmt="png"))
        thermal_stamps.append(thermal_stamp)
        assert probe.wait_for(lambda s=thermal_stamp: any(_stamp(r.msg) == s for r in probe.fused), 90)

    for received in probe.fused:
        fused = received.msg
        assert _stamp(fused) in thermal_stamps  # output.reference: thermal
        assert (fused.height, fused.width, fused.encoding) == (H, W, "mono8")  # thermal resized to visible
        assert fused.header.frame_id == "thermal_optical_frame"  # the reference camera's frame_id

    assert probe.wait_for(lambda: len(debug) > 0, 30)
    panel = debug[-1]
    assert (panel.height, panel.width, panel.encoding) == (H, 3 * W, "bgr8")
    pixels = np.frombuffer(panel.data, np.uint8).reshape(H, 3 * W, 3)
    assert pixels[:, :W].std() > 0 and pixels[:, W:2 * W].std() > 0
