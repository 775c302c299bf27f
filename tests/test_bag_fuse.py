"""diffmf_bag: bags written here from generated frames (sqlite3 and mcap, Image and CompressedImage)
are fused into the expected number of messages with the right stamps and sizes; bad bags stop
with a one-line reason, exit code 2, and an output bag that holds what was written before."""

import cv2
import numpy as np
import pytest

from diffmf_ros import bag_fuse
from diffmf_ros.bag_io import IMAGE, BagReader, BagWriter, build_compressed, build_image, header_stamp_ns, typestore
from diffmf_ros.scene_bag import CameraTopic, write_scene_bag
from diffmf_ros.synthetic_scene import sequence

W, H = 64, 48
N = 3


@pytest.fixture(scope="module")
def engine():
    from diffmf_core import FusionEngine

    return FusionEngine(device="cpu")


def _fused_messages(path, topic="/fused/image_raw"):
    with BagReader(path) as bag:
        conns = bag.connections_of(topic)
        msgs = [(log_ns, bag.deserialize(raw, c, log_ns)) for c, log_ns, raw in bag.messages(conns)]
        return msgs, bag.storage, {t: i.count for t, i in bag.topics().items()}


@pytest.mark.parametrize(
    "storage,thermal,visible",
    [
        ("sqlite3", CameraTopic("/ir/image_raw", frame_id="ir"), CameraTopic("/vi/compressed", "jpeg", frame_id="vi")),
        ("mcap", CameraTopic("/ir/compressed", "png", frame_id="ir"), CameraTopic("/vi/image_raw", frame_id="vi")),
    ],
)
def test_fused_bag_has_one_message_per_pair_with_reference_stamps(tmp_path, engine, storage, thermal, visible):
    pairs = list(sequence(N, rate_hz=10, width=W, height=H))
    write_scene_bag(tmp_path / "in", pairs, thermal=thermal, visible=visible, storage=storage)
    options = bag_fuse.FuseOptions(thermal.topic, visible.topic)
    summary = bag_fuse.fuse_bag(tmp_path / "in", options, engine, output_bag=tmp_path / "out", progress=False)

    assert (summary.pairs, summary.fused, sum(summary.drops.values())) == (N, N, 0)
    msgs, out_storage, counts = _fused_messages(tmp_path / "out")
    assert out_storage == storage  # same storage plugin as the input by default
    assert counts == {"/fused/image_raw": N}  # nothing copied unless asked
    assert [header_stamp_ns(m) for _, m in msgs] == [p.visible_stamp_ns for p in pairs]
    for (log_ns, msg), pair in zip(msgs, pairs):
        assert (msg.height, msg.width, msg.encoding, msg.header.frame_id) == (H, W, "bgr8", "vi")
        assert msg.step == W * 3 and len(msg.data) == H * W * 3
        assert log_ns >= pair.thermal_stamp_ns  # logged when the pair was complete


def test_cli_thermal_reference_mono8_video_pngs_and_copied_topics(tmp_path, capsys):
    pairs = list(sequence(N, rate_hz=10, width=W, height=H))
    write_scene_bag(tmp_path / "in", pairs, storage="mcap",
                    visible=CameraTopic("/visible/image_raw/compressed", "jpeg", frame_id="vi"))
    rc = bag_fuse.main([
        str(tmp_path / "in"), "--thermal", "thermal/image_raw", "--visible", "/visible/image_raw/compressed",
        "--output", str(tmp_path / "out"), "--storage", "sqlite3", "--fused-topic", "/fusion/out",
        "--reference", "thermal", "--encoding", "mono8", "--copy-topics",
        "--video", str(tmp_path / "fused.mp4"), "--png-dir", str(tmp_path / "png"), "--no-progress",
    ])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"pairs: {N}, fused: {N}, copied messages: {2 * N}" in out and "drops: none" in out
    msgs, storage, counts = _fused_messages(tmp_path / "out", "/fusion/out")
    assert storage == "sqlite3"
    assert counts == {"/fusion/out": N, "/thermal/image_raw": N, "/visible/image_raw/compressed": N}
    assert [header_stamp_ns(m) for _, m in msgs] == [p.thermal_stamp_ns for p in pairs]
    assert {(m.encoding, m.height, m.width, m.header.frame_id) for _, m in msgs} == {
        ("mono8", H, W, "thermal_camera")}
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert [int(p.stem.split("_")[1]) for p in pngs] == [p.thermal_stamp_ns for p in pairs]
    assert cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED).shape == (H, W)
    video = cv2.VideoCapture(str(tmp_path / "fused.mp4"))
    frames = 0
    while video.read()[0]:
        frames += 1
    assert frames == N and video.get(cv2.CAP_PROP_FRAME_WIDTH) == W


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_bag_is_a_clean_error(tmp_path, capsys, storage):
    write_scene_bag(tmp_path / "in", sequence(4, width=W, height=H), storage=storage)
    (data,) = [p for p in (tmp_path / "in").iterdir() if p.name != "metadata.yaml"]
    data.write_bytes(data.read_bytes()[: data.stat().st_size * 2 // 3])
    rc = bag_fuse.main([str(tmp_path / "in"), "--thermal", "/thermal/image_raw", "--visible",
                        "/visible/image_raw", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == bag_fuse.EXIT_BAD_BAG
    assert len(err) == 1 and err[0].startswith(f"diffmf_bag: error: {tmp_path / 'in'}: cannot open")
    assert not (tmp_path / "out").exists()


def test_missing_topic_is_a_clean_error(tmp_path, capsys):
    write_scene_bag(tmp_path / "in", sequence(1, width=W, height=H), storage="sqlite3")
    rc = bag_fuse.main([str(tmp_path / "in"), "--thermal", "/lwir", "--visible", "/visible/image_raw",
                        "--png-dir", str(tmp_path / "png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == bag_fuse.EXIT_BAD_BAG and len(err) == 1
    assert "topic '/lwir' is not in the bag (usable topics: /thermal/image_raw" in err[0]


def test_truncated_message_stops_the_run_and_keeps_what_was_fused(tmp_path, capsys):
    """Two good pairs, then a visible message cut short: exit 2, the output bag holds the two fused frames."""
    pairs = list(sequence(4, rate_hz=10, width=W, height=H))
    with BagWriter(tmp_path / "in", "mcap") as bag:
        ir = bag.add_topic("/thermal/image_raw", IMAGE)
        vi = bag.add_topic("/visible/image_raw/compressed", "sensor_msgs/msg/CompressedImage")
        for i, p in enumerate(pairs):
            raw = bytes(typestore().serialize_cdr(
                build_compressed(p.visible, "jpeg", p.visible_stamp_ns, "vi"), vi.msgtype))
            bag.write(vi, p.visible_stamp_ns, raw if i != 2 else raw[: len(raw) // 3])
            bag.write_message(ir, p.thermal_stamp_ns, build_image(p.thermal, "mono16", p.thermal_stamp_ns, "ir"))
    rc = bag_fuse.main([str(tmp_path / "in"), "--thermal", "/thermal/image_raw", "--visible",
                        "/visible/image_raw/compressed", "--output", str(tmp_path / "out"), "--no-progress"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == bag_fuse.EXIT_BAD_BAG
    assert err[-1].startswith(f"diffmf_bag: error: {tmp_path / 'in'}: message on '/visible/image_raw/compressed'")
    assert "truncated or corrupt" in err[-1] and "fused: 2" in captured.out
    msgs, _, _ = _fused_messages(tmp_path / "out")  # the partial output bag opens...
    assert [header_stamp_ns(m) for _, m in msgs] == [p.visible_stamp_ns for p in pairs[:2]]  # ...and holds both
    assert all(np.frombuffer(m.data, np.uint8).size == H * W * 3 for _, m in msgs)


def test_node_params_file_sets_registration_and_encoding(tmp_path, engine, capsys):
    """A half-size thermal camera: dropped as size_mismatch by default, resized with the node's parameter file."""
    pairs = list(sequence(2, rate_hz=10, width=W, height=H))
    with BagWriter(tmp_path / "in", "sqlite3") as bag:
        ir = bag.add_topic("/thermal/image_raw", IMAGE)
        vi = bag.add_topic("/visible/image_raw", IMAGE)
        for p in pairs:
            small = cv2.resize(p.thermal, (W // 2, H // 2), interpolation=cv2.INTER_AREA)
            bag.write_message(ir, p.thermal_stamp_ns, build_image(small, "mono16", p.thermal_stamp_ns, "ir"))
            bag.write_message(vi, p.visible_stamp_ns, build_image(p.visible, "rgb8", p.visible_stamp_ns, "vi"))
    options = bag_fuse.FuseOptions("/thermal/image_raw", "/visible/image_raw")
    summary = bag_fuse.fuse_bag(tmp_path / "in", options, engine, png_dir=tmp_path / "none", progress=False)
    assert (summary.pairs, summary.fused, summary.drops["size_mismatch"]) == (2, 0, 2)

    params = tmp_path / "fusion.yaml"
    params.write_text("/**:\n  ros__parameters:\n    use_sim_time: true\n    output:\n      encoding: mono8\n"
                      "    registration:\n      mode: resize\n")
    args = [str(tmp_path / "in"), "--thermal", "/thermal/image_raw", "--visible", "/visible/image_raw",
            "--output", str(tmp_path / "out"), "--params-file", str(params), "--no-progress"]
    assert bag_fuse.main(args) == 0
    msgs, _, _ = _fused_messages(tmp_path / "out")
    assert [(m.encoding, m.height, m.width) for _, m in msgs] == [("mono8", H, W)] * 2

    params.write_text("/**:\n  ros__parameters:\n    sync:\n      slop: fast\n")
    with pytest.raises(SystemExit) as exit_info:
        bag_fuse.main(args[:-3] + ["--png-dir", str(tmp_path / "png"), "--params-file", str(params)])
    assert exit_info.value.code == 2
    assert "fusion.yaml: parameter sync.slop: expected a number, got 'fast'" in capsys.readouterr().err
