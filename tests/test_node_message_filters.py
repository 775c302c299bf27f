"""sync.backend: message_filters, against a stand-in with message_filters' Python API (the real package
has no pip wheel). Checks that the node calls the synchroniser with keyword arguments (its positional
signature changed between Jazzy and Kilted) and fuses what the synchroniser pairs."""

import sys
import time
import types

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402

from diffmf_ros.node import FusionNode  # noqa: E402
from diffmf_ros.probe import BackgroundNode, FusionProbe, synthetic_pair  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

H, W = 32, 48


class SimpleFilter:
    def __init__(self):
        self.callbacks = []

    def registerCallback(self, callback, *args):  # noqa: N802  (message_filters' name)
        self.callbacks.append((callback, args))

    def signalMessage(self, *msgs):  # noqa: N802
        for callback, args in self.callbacks:
            callback(*(msgs + args))


class Subscriber(SimpleFilter):
    def __init__(self, node, msg_type, topic, **kwargs):
        super().__init__()
        self.sub = node.create_subscription(msg_type, topic, self.signalMessage, kwargs.get("qos_profile", 10))


class ApproximateTimeSynchronizer(SimpleFilter):
    """Keyword-only on purpose; pairs the newest message of each input when their stamps are within slop."""

    instances = []

    def __init__(self, *, fs, queue_size, slop):
        super().__init__()
        self.queue_size, self.slop = queue_size, slop
        self.latest = [None] * len(fs)
        for index, f in enumerate(fs):
            f.registerCallback(self.add, index)
        ApproximateTimeSynchronizer.instances.append(self)

    def add(self, msg, index):
        self.latest[index] = msg
        if None in self.latest:
            return
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in self.latest]
        if max(stamps) - min(stamps) <= self.slop:
            msgs, self.latest = self.latest, [None] * len(self.latest)
            self.signalMessage(*msgs)


@pytest.fixture
def stand_in(monkeypatch):
    module = types.ModuleType("message_filters")
    module.Subscriber, module.ApproximateTimeSynchronizer = Subscriber, ApproximateTimeSynchronizer
    monkeypatch.setitem(sys.modules, "message_filters", module)
    ApproximateTimeSynchronizer.instances.clear()
    return module


def test_message_filters_backend_pairs_and_the_node_fuses(stand_in):
    context = rclpy.context.Context()  # a context of our own: other test modules' ROS state cannot interfere
    rclpy.init(context=context)
    params = {"sync.backend": "message_filters", "sync.slop": 0.01, "sync.queue_size": 7,
              "model.warmup_width": W, "model.warmup_height": H, "qos.input.reliability": "reliable",
              "health.camera_timeout": 30.0, "health.diagnostics_period": 0.3}
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    node = FusionNode("mf_fusion", context=context, parameter_overrides=overrides)
    background = BackgroundNode(node)
    probe = FusionProbe("mf_probe", context=context)
    try:
        assert node.configure_error is None
        (sync,) = ApproximateTimeSynchronizer.instances
        assert (sync.queue_size, sync.slop) == (7, 0.01)
        assert probe.wait_for_subscribers(timeout=60)
        thermal, visible = synthetic_pair(H, W)
        stamp = time.time_ns()
        probe.publish("visible", probe.make_msg("visible", visible, stamp))
        probe.publish("thermal", probe.make_msg("thermal", thermal, stamp + 2_000_000))
        assert probe.wait_for_fused(1, timeout=60)
        fused = probe.fused[0].msg
        assert fused.header.stamp.sec * 1_000_000_000 + fused.header.stamp.nanosec == stamp
        status = probe.wait_for_diagnostics(lambda d: int(d["fused"]) >= 1, timeout=30)
        assert status["sync_backend"] == "message_filters"
        assert int(status["frames_thermal"]) == 1 and int(status["frames_visible"]) == 1
    finally:
        probe.close()
        background.close()
        rclpy.shutdown(context=context)
