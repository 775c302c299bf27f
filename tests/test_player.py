"""diffmf_play: a bag's image topics go out as recorded, with /clock carrying bag time; replayed
through the real node (use_sim_time) they come back fused, stamped with bag time."""

import os
import subprocess
import sys
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 wheels) is not installed")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from diffmf_ros import player as player_cli  # noqa: E402
from diffmf_ros.bag_io import BagWriter, typestore  # noqa: E402
from diffmf_ros.player import BagPlayer  # noqa: E402
from diffmf_ros.scene_bag import CameraTopic, write_scene_bag  # noqa: E402
from diffmf_ros.synthetic_scene import sequence  # noqa: E402

pytestmark = pytest.mark.ros

W, H = 64, 48
NS = 1_000_000_000


class Listener:
    """A node of its own context, spinning in a thread, recording what arrives."""

    def __init__(self, topics):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("test_listener", context=self.context)
        self.lock = threading.Lock()
        self.received = {topic: [] for topic, _ in topics}
        self.clock = []
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
        for topic, msg_type in topics:
            self.node.create_subscription(msg_type, topic, lambda m, t=topic: self._store(t, m), qos)
        self.node.create_subscription(Clock, "/clock", self._on_clock, qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _store(self, topic, msg):
        with self.lock:
            self.received[topic].append(msg)

    def _on_clock(self, msg):
        with self.lock:
            self.clock.append(msg.clock.sec * NS + msg.clock.nanosec)

    def stamps(self, topic):
        with self.lock:
            return [m.header.stamp.sec * NS + m.header.stamp.nanosec for m in self.received[topic]]

    def wait_for(self, topic, count, timeout):
        deadline = time.monotonic() + timeout
        while len(self.stamps(topic)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.stamps(topic)

    def wait_for_publishers(self, topics, timeout):
        """The other half of DDS discovery: this side has matched the player's writers too."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.node.count_publishers(t) > 0 for t in topics):
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=5)


@pytest.fixture
def player_node():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("test_player", context=context)
    yield node
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def _scene_bag(path, n, rate_hz=20.0, storage="mcap"):
    pairs = list(sequence(n, rate_hz=rate_hz, width=W, height=H))
    write_scene_bag(path, pairs, storage=storage,
                    visible=CameraTopic("/visible/image_raw/compressed", "jpeg", frame_id="visible_camera"))
    return pairs


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_player_publishes_every_message_with_recorded_timing_and_clock(tmp_path, player_node, storage):
    pairs = _scene_bag(tmp_path / "bag", 6, storage=storage)
    listener = Listener([("/thermal/image_raw", Image), ("/visible/image_raw/compressed", CompressedImage)])
    try:
        player = BagPlayer(player_node, tmp_path / "bag", rate=2.0, clock=True)
        assert player.wait_for_subscribers(10.0) and listener.wait_for_publishers(player.topics, 10.0)
        published = []
        begin = time.monotonic()
        stats = player.play(on_publish=lambda topic, log_ns, wall: published.append((log_ns, time.monotonic())))
        player.close()
        thermal = listener.wait_for("/thermal/image_raw", len(pairs), 10.0)
        visible = listener.wait_for("/visible/image_raw/compressed", len(pairs), 10.0)
    finally:
        listener.close()
    assert thermal == [p.thermal_stamp_ns for p in pairs]  # every message, in order, stamps untouched
    assert visible == [p.visible_stamp_ns for p in pairs]
    assert stats.published == {"/thermal/image_raw": len(pairs), "/visible/image_raw/compressed": len(pairs)}
    assert stats.loops == 1 and stats.clock_ticks >= 2 * len(pairs)
    # Never early: each message leaves no sooner than its log-time offset / rate after playback began.
    first_log = published[0][0]
    for log_ns, wall in published:
        assert wall - begin >= (log_ns - first_log) / NS / 2.0
    # /clock carried bag time, never wall time, and reached the last message's log time.
    assert listener.clock and min(listener.clock) >= published[0][0] - NS // 10
    assert max(listener.clock) == published[-1][0]


def test_looping_player_jumps_the_clock_back(tmp_path, player_node):
    _scene_bag(tmp_path / "bag", 3)
    listener = Listener([("/thermal/image_raw", Image)])
    try:
        player = BagPlayer(player_node, tmp_path / "bag", rate=4.0, loop=True, clock=True,
                           topics=["/thermal/image_raw"])
        assert player.wait_for_subscribers(10.0) and listener.wait_for_publishers(["/clock"], 10.0)
        count = []

        def stop_after_two_passes(topic, log_ns, wall):
            count.append(log_ns)
            if len(count) == 6:
                player.stop()

        stats = player.play(on_publish=stop_after_two_passes)
        player.close()
        time.sleep(0.3)
        clock = list(listener.clock)
    finally:
        listener.close()
    assert stats.loops >= 1 and count[3] == count[0]  # the second pass starts again at the first message
    assert any(b < a for a, b in zip(clock, clock[1:]))  # the clock went backwards once the bag looped


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert player_cli.main([str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.strip() == f"diffmf_play: error: {tmp_path / 'absent'}: no such bag"
    with BagWriter(tmp_path / "text", "sqlite3") as bag:
        conn = bag.add_topic("/chatter", "std_msgs/msg/String")
        bag.write_message(conn, 1, typestore().types["std_msgs/msg/String"](data="hi"))
    assert player_cli.main([str(tmp_path / "text")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"diffmf_play: error: {tmp_path / 'text'}: has no sensor_msgs Image or CompressedImage topics"
                   " to play"]


def _node_command(params):
    args = [sys.executable, "-m", "diffmf_ros.node", "--ros-args", "-p", "use_sim_time:=true"]
    for name, value in params.items():
        args += ["-p", f"{name}:={value}"]
    return args


@pytest.mark.slow
def test_replay_through_node_over_clock_gives_fused_frames_stamped_with_bag_time(tmp_path, player_node):
    pairs = _scene_bag(tmp_path / "bag", 8, rate_hz=10.0)
    env = dict(os.environ)  # conftest put DDS on localhost in this run's own domain
    node = subprocess.Popen(
        _node_command({"visible.transport": "compressed", "model.warmup_width": W, "model.warmup_height": H,
                       "health.summary_period": 0.0}),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    listener = Listener([("/fused/image_raw", Image)])
    try:
        player = BagPlayer(player_node, tmp_path / "bag", rate=0.5, clock=True)
        ready = player.wait_for_subscribers(120.0)
        assert ready, "the node never subscribed: " + (node.poll() is not None and node.stdout.read() or "")
        player.play()
        player.close()
        stamps = listener.wait_for("/fused/image_raw", len(pairs), 20.0)
        fused = list(listener.received["/fused/image_raw"])
    finally:
        listener.close()
        node.terminate()
        try:
            log = node.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            node.kill()
            log = node.communicate()[0]
    # The node's max-age check runs on its clock: without /clock the 2023 bag stamps would all be stale.
    assert stamps, f"no fused frames came back; node log:\n{log[-3000:]}"
    assert set(stamps) <= {p.visible_stamp_ns for p in pairs}  # bag time, the visible camera's stamps
    assert stamps == sorted(stamps)
    assert {(m.height, m.width, m.encoding, m.header.frame_id) for m in fused} == {(H, W, "bgr8", "visible_camera")}


def test_gate_pauses_playback_and_clock_then_keeps_recorded_spacing(tmp_path, player_node):
    _scene_bag(tmp_path / "bag", 3, rate_hz=10.0)
    player = BagPlayer(player_node, tmp_path / "bag", rate=1.0, clock=True, clock_hz=100.0)
    ticks_during_gate, published, resumed = [], [], []

    def gate(topic, log_ns):
        if len(published) == 2 and not resumed:  # hold the second pair back for a while
            before = player.stats.clock_ticks
            time.sleep(0.4)
            ticks_during_gate.append(player.stats.clock_ticks - before)
            resumed.append(time.monotonic())

    stats = player.play(on_publish=lambda topic, log_ns, wall: published.append((log_ns, time.monotonic())),
                        gate=gate)
    player.close()
    assert ticks_during_gate == [0]  # the bag's clock stood still while paused
    assert len(published) == 6 and stats.published["/thermal/image_raw"] == 3
    # After the pause the recorded spacing resumes (no burst of overdue messages).
    resume_log = published[2][0]
    for log_ns, wall in published[2:]:
        assert wall - resumed[0] >= (log_ns - resume_log) / NS
    assert published[2][1] - published[1][1] >= 0.4
