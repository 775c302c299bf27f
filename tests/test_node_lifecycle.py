"""Lifecycle: the model is loaded before any subscription exists; bad parameters stop the node with one line."""

import importlib.util
import os
import subprocess
import sys

import pytest

rclpy = pytest.importorskip("rclpy")

from diffmf_ros.node import FusionNode  # noqa: E402

pytestmark = pytest.mark.ros

SMALL = {"model.warmup_width": 32, "model.warmup_height": 32}


CONTEXT = {}


@pytest.fixture(scope="module", autouse=True)
def ros():
    context = rclpy.context.Context()  # a context of our own: other test modules' ROS state cannot interfere
    rclpy.init(context=context)
    CONTEXT["ros"] = context
    yield context
    rclpy.shutdown(context=context)


def _node(name, **values):
    context = CONTEXT["ros"]
    from rclpy.parameter import Parameter

    overrides = [Parameter(k, value=v) for k, v in {**SMALL, **values}.items()]
    return FusionNode(name, context=context, parameter_overrides=overrides)


def _subscribed_topics(node):
    return sorted(sub.topic_name for sub in node.subscriptions)


def test_configure_loads_the_model_and_only_activate_subscribes():
    node = _node("lifecycle_manual", autostart=False)
    try:
        assert node.engine is None and _subscribed_topics(node) == []
        assert node.trigger_configure() == rclpy.lifecycle.TransitionCallbackReturn.SUCCESS
        assert node.engine is not None, "configure loads the model"
        assert _subscribed_topics(node) == [], "no camera subscription before activate"
        assert node.trigger_activate() == rclpy.lifecycle.TransitionCallbackReturn.SUCCESS
        assert _subscribed_topics(node) == ["/thermal/image_raw", "/visible/image_raw"]
        assert node.trigger_deactivate() == rclpy.lifecycle.TransitionCallbackReturn.SUCCESS
        assert _subscribed_topics(node) == []
        assert node.trigger_cleanup() == rclpy.lifecycle.TransitionCallbackReturn.SUCCESS
        assert node.engine is None
    finally:
        node.destroy_node()


def test_autostart_comes_up_active_with_compressed_topics():
    node = _node("lifecycle_auto", **{"thermal.transport": "compressed"})
    try:
        assert node.engine is not None
        assert _subscribed_topics(node) == ["/thermal/image_raw/compressed", "/visible/image_raw"]
    finally:
        node.destroy_node()


def test_bad_parameter_fails_configure_and_names_it():
    node = _node("lifecycle_bad", **{"sync.slop": -1.0})
    try:
        assert node.settings is None and node.engine is None
        assert "parameter sync.slop: must be >= 0" in node.configure_error
        assert _subscribed_topics(node) == []
    finally:
        node.destroy_node()


@pytest.mark.skipif(importlib.util.find_spec("message_filters") is not None, reason="message_filters is installed")
def test_message_filters_backend_without_message_filters_is_a_clear_error():
    node = _node("lifecycle_mf", **{"sync.backend": "message_filters"})
    try:
        assert node.engine is None
        assert "'message_filters' is not installed here" in node.configure_error
        assert "sync.backend: diffmf" in node.configure_error
    finally:
        node.destroy_node()


def test_missing_checkpoint_is_a_one_line_error():
    node = _node("lifecycle_ckpt", **{"model.checkpoint": "/nonexistent/weights.safetensors"})
    try:
        assert node.engine is None
        assert "weights.safetensors" in node.configure_error
    finally:
        node.destroy_node()


def test_entry_point_exits_1_with_the_reason():
    result = subprocess.run(
        [sys.executable, "-m", "diffmf_ros.node", "--ros-args", "-p", "output.encoding:=yuv422"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )
    assert result.returncode == 1
    assert "parameter output.encoding: 'yuv422' is not one of mono8, bgr8, rgb8" in result.stderr + result.stdout


def test_a_camera_with_incompatible_qos_is_reported():
    from rcl_interfaces.msg import Log
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from diffmf_ros.probe import BackgroundNode, FusionProbe

    node = BackgroundNode(_node("lifecycle_qos", **{"qos.input.reliability": "reliable"}))
    probe = FusionProbe("lifecycle_qos_probe", context=CONTEXT["ros"])
    try:
        best_effort = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        probe.node.create_publisher(Image, "thermal/image_raw", best_effort)
        assert probe.wait_for(lambda: probe.log_lines("lifecycle_qos", "offers a QoS our subscription cannot accept",
                                                      level=Log.WARN), timeout=30)
        (line,) = probe.log_lines("lifecycle_qos", "offers a QoS")
        assert "thermal/image_raw" in line and "qos.input.reliability: best_effort" in line
    finally:
        probe.close()
        node.close()
