"""Overload: cameras at ~10x the inference rate. Memory stays flat, queues stay within their bounds,
the surplus is dropped and counted, and no backlog builds up (checked by counts, not timings)."""

import time

import pytest

rclpy = pytest.importorskip("rclpy")

from diffmf_ros.probe import FusionProbe, NodeProcess, synthetic_pair  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

H, W = 96, 128
QUEUE = 3
NODE = "overload_fusion"
RSS_GROWTH_LIMIT_MB = 150.0


@pytest.fixture(scope="module")
def rig():
    context = rclpy.context.Context()  # a context of our own: other test modules' ROS state cannot interfere
    rclpy.init(context=context)
    overrides = {
        "model.warmup_width": W,
        "model.warmup_height": H,
        "sync.queue_size": QUEUE,
        "sync.max_age": 0.0,  # let every pair wait: only the one-slot policy may bound the backlog
        "health.diagnostics_period": 0.5,
        "health.camera_timeout": 30.0,
    }
    node = NodeProcess([], overrides=overrides, name=NODE)
    probe = FusionProbe("overload_probe", context=context, keep_images=False)
    try:
        if not probe.wait_for_subscribers(timeout=180):
            pytest.fail(f"the node never subscribed; its output:\n{node.tail()}")
        yield probe
    finally:
        probe.close()
        node.stop()
        rclpy.shutdown(context=context)


def _flood(probe, pairs, rate_hz):
    thermal, visible = synthetic_pair(H, W)
    thermal_msg = probe.make_msg("thermal", thermal, 0)
    visible_msg = probe.make_msg("visible", visible, 0)
    period = 1.0 / rate_hz
    next_at = time.monotonic()
    for _ in range(pairs):
        stamp_ns = time.time_ns()
        for stream, msg in (("visible", visible_msg), ("thermal", thermal_msg)):
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            probe.publish(stream, msg)
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))


def test_ten_times_the_inference_rate_keeps_memory_flat_and_drops_the_surplus(rig):
    probe = rig
    # Measure the inference rate first, so "10x" holds on any machine.
    _flood(probe, 6, rate_hz=3)
    first = probe.wait_for_diagnostics(lambda d: int(d["fused"]) >= 2, timeout=120)
    assert first is not None, "the node did not fuse at all"
    inference_s = float(first["inference_p50_ms"]) / 1e3
    rate = min(200.0, 10.0 / inference_s)

    _flood(probe, int(rate * 2), rate)  # warm phase: every buffer reaches its working size
    warm = probe.wait_for_diagnostics(lambda d: True, timeout=30)
    _flood(probe, int(rate * 4), rate)
    fused_when_cameras_stopped = probe.fused_count
    # Quiet: two diagnostics in a row with the same fused count.
    previous = probe.wait_for_diagnostics(lambda d: True, timeout=30)
    for _ in range(60):
        end = probe.wait_for_diagnostics(lambda d: True, timeout=30)
        assert end is not None and previous is not None, "diagnostics stopped"
        if end["fused"] == previous["fused"]:
            break
        previous = end
    else:
        pytest.fail("the node kept fusing long after the cameras stopped: a backlog")

    pairs_in = int(end["frames_visible"])
    drops = {k[len("drop."):]: int(v) for k, v in end.items() if k.startswith("drop.")}
    assert int(end["fused"]) < pairs_in / 3, "overload should fuse far fewer pairs than arrive"
    assert drops.get("superseded", 0) > 0, f"the surplus must be counted as superseded: {drops}"
    assert int(end["pending_peak"]) <= QUEUE, "a queue grew past its bound"
    # No backlog: once the cameras stop, at most the pair in inference, the one in the slot and
    # one fused message in flight arrive.
    assert probe.fused_count - fused_when_cameras_stopped <= 3
    growth = float(end["peak_rss_mb"]) - float(warm["peak_rss_mb"])
    assert growth < RSS_GROWTH_LIMIT_MB, f"peak RSS grew {growth:.0f} MB under overload"
    print(f"overload at {rate:.0f} Hz: {pairs_in} pairs in, {end['fused']} fused, drops {drops},"
          f" peak RSS {warm['peak_rss_mb']} -> {end['peak_rss_mb']} MB")
