"""Bag reading and writing with rosbags: round trips in both storage plugins, and one-line errors."""

import numpy as np
import pytest

from diffmf_ros.bag_io import (
    COMPRESSED,
    IMAGE,
    BagOpenError,
    BagReader,
    BagReadError,
    BagTopicError,
    BagWriteError,
    BagWriter,
    build_image,
    decode_image,
    detect_storage,
    header_stamp_ns,
    typestore,
)
from diffmf_ros.scene_bag import CameraTopic, write_scene_bag
from diffmf_ros.synthetic_scene import SyntheticScene, sequence

W, H = 64, 48


def _read_all(path, topic):
    with BagReader(path) as bag:
        conn = bag.connection(topic)
        out = []
        for c, log_ns, raw in bag.messages(bag.connections_of(conn.topic)):
            msg = bag.deserialize(raw, c, log_ns)
            out.append((log_ns, header_stamp_ns(msg), msg.header.frame_id, decode_image(msg, c.msgtype)))
        return out


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("thermal_fmt,visible_fmt", [("raw", "jpeg"), ("png", "raw")])
def test_scene_bag_round_trip(tmp_path, storage, thermal_fmt, visible_fmt):
    pairs = list(sequence(3, rate_hz=10, width=W, height=H))
    bag = tmp_path / "scene"
    counts = write_scene_bag(
        bag, pairs, thermal=CameraTopic("/ir", thermal_fmt, frame_id="ir_cam"),
        visible=CameraTopic("/vi", visible_fmt, frame_id="vi_cam"), storage=storage,
    )
    assert counts == {"/ir": 3, "/vi": 3}
    assert detect_storage(bag) == storage
    with BagReader(bag) as reader:
        topics = reader.topics()
        assert topics["/ir"].msgtype == (IMAGE if thermal_fmt == "raw" else COMPRESSED)
        assert topics["/vi"].msgtype == (IMAGE if visible_fmt == "raw" else COMPRESSED)
    thermal = _read_all(bag, "/ir")
    visible = _read_all(bag, "/vi")
    for pair, (_, stamp, frame_id, array) in zip(pairs, thermal):
        assert stamp == pair.thermal_stamp_ns and frame_id == "ir_cam"
        np.testing.assert_array_equal(array, pair.thermal)  # raw and PNG keep all 16 bits
    for pair, (log_ns, stamp, frame_id, array) in zip(pairs, visible):
        assert stamp == pair.visible_stamp_ns and frame_id == "vi_cam" and log_ns > stamp
        assert array.shape == (H, W, 3) and array.dtype == np.uint8
        if visible_fmt == "raw":
            np.testing.assert_array_equal(array, pair.visible)
        else:
            assert np.abs(array.astype(int) - pair.visible).mean() < 6  # JPEG is lossy


def test_relative_topic_name_finds_absolute_topic(tmp_path):
    write_scene_bag(tmp_path / "b", sequence(1, width=W, height=H), storage="sqlite3")
    with BagReader(tmp_path / "b") as bag:
        assert bag.connection("thermal/image_raw").topic == "/thermal/image_raw"


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_file_is_one_line_open_error(tmp_path, storage):
    bag = tmp_path / "cut"
    write_scene_bag(bag, sequence(4, width=W, height=H), storage=storage)
    (data,) = [p for p in bag.iterdir() if p.name != "metadata.yaml"]
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(BagOpenError) as err:
        BagReader(bag).open()
    message = str(err.value)
    assert "\n" not in message and str(bag) in message and "truncated" in message


def test_missing_bag_and_folder_without_metadata(tmp_path):
    with pytest.raises(BagOpenError, match="no such bag"):
        BagReader(tmp_path / "absent").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagOpenError, match="no .db3 or .mcap"):
        BagReader(tmp_path / "empty").open()


def test_missing_topic_and_wrong_type_name_the_problem(tmp_path):
    bag = tmp_path / "b"
    with BagWriter(bag, "mcap") as out:
        conn = out.add_topic("/status", "std_msgs/msg/String")
        out.write_message(conn, 1, typestore().types["std_msgs/msg/String"](data="hello"))
        img = out.add_topic("/cam", IMAGE)
        out.write_message(img, 2, build_image(np.zeros((H, W), np.uint8), "mono8", 2))
    with BagReader(bag) as reader:
        with pytest.raises(BagTopicError, match=r"'/thermal' is not in the bag \(usable topics: /cam"):
            reader.connection("/thermal")
        with pytest.raises(BagTopicError, match="has type std_msgs/msg/String, expected sensor_msgs/msg/Image"):
            reader.connection("/status")


def test_truncated_message_is_a_read_error(tmp_path):
    bag = tmp_path / "b"
    with BagWriter(bag, "sqlite3") as out:
        conn = out.add_topic("/cam", IMAGE)
        raw = bytes(typestore().serialize_cdr(build_image(np.zeros((H, W), np.uint8), "mono8", 5), IMAGE))
        out.write(conn, 5, raw[:40])
    with BagReader(bag) as reader:
        (c, log_ns, raw) = next(reader.messages(reader.connections_of("/cam")))
        with pytest.raises(BagReadError, match="'/cam' at t=0.000000005 s is truncated or corrupt"):
            reader.deserialize(raw, c, log_ns)


def test_writer_refuses_to_overwrite_and_unknown_storage(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(BagWriteError, match="already exists"):
        BagWriter(tmp_path / "exists", "mcap").open()
    with pytest.raises(BagWriteError, match="unknown storage 'rosbag1'"):
        BagWriter(tmp_path / "x", "rosbag1")


def test_scene_has_warm_targets_and_a_dim_colour_view():
    scene = SyntheticScene(160, 128, seed=3)
    thermal, visible = scene.render(0.7)
    celsius = thermal.astype(np.float32) / 100 - 273.15
    assert thermal.dtype == np.uint16 and visible.dtype == np.uint8 and visible.shape == (128, 160, 3)
    assert celsius.max() > 30 and np.median(celsius) < 15  # people/engines warm, background cool
    assert visible.mean() < 110  # a dark, foggy night view
    assert np.abs(visible[..., 0].astype(int) - visible[..., 2]).max() > 40  # with real colour in it
    later, _ = scene.render(1.7)
    assert np.abs(later.astype(int) - thermal).max() > 500  # things move (> 5 K somewhere)
    again, _ = SyntheticScene(160, 128, seed=3).render(0.7)
    np.testing.assert_array_equal(again, thermal)  # deterministic
