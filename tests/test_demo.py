"""diffmf_demo end to end on a reduced setting: generated scene -> bag -> real node over ROS 2 -> outputs."""

import json

import cv2
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2 wheels) is not installed")

from diffmf_ros import demo  # noqa: E402
from diffmf_ros.bag_io import BagReader, header_stamp_ns  # noqa: E402
from diffmf_ros.synthetic_scene import sequence  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FRAMES, W, H, HZ = 4, 64, 48, 10.0


def test_demo_writes_video_contact_sheet_and_fused_bag(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = demo.main(["--out", str(out), "--frames", str(FRAMES), "--width", str(W), "--height", str(H),
                    "--rate-hz", str(HZ)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    lines = printed.out.strip().splitlines()
    assert lines[-1] == f"diffmf_demo: outputs in {out.resolve()}"
    assert any("fused frames/s; end-to-end latency p50" in line for line in lines)

    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["fused"] == summary["published_pairs"] == FRAMES  # paced: every pair is fused
    assert summary["latency_p99_ms"] >= summary["latency_p50_ms"] > 0

    video = cv2.VideoCapture(str(out / "side_by_side.mp4"))
    frames = 0
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames += 1
        assert frame.shape == (2 * H, 3 * 2 * W, 3)  # thermal | visible | fused, enlarged 2x at this size
    assert frames == FRAMES
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[1] == 3 * 2 * W

    scene_stamps = [p.visible_stamp_ns for p in sequence(FRAMES, HZ, W, H)]
    with BagReader(out / "fused_bag") as bag:
        conn = bag.connection("/fused/image_raw")
        msgs = [bag.deserialize(raw, c, t) for c, t, raw in bag.messages([conn])]
    assert [header_stamp_ns(m) for m in msgs] == scene_stamps  # fused frames carry the bag's camera stamps
    assert {(m.width, m.height, m.encoding) for m in msgs} == {(W, H, "bgr8")}

    # A second run into the same folder replaces the demo's own outputs.
    assert demo.main(["--out", str(out), "--frames", "1", "--width", str(W), "--height", str(H)]) == 0
    assert json.loads((out / "demo_summary.json").read_text())["fused"] == 1


def test_demo_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "scene_bag").mkdir()
    (tmp_path / "scene_bag" / "notes.txt").write_text("mine")
    assert demo.main(["--out", str(tmp_path), "--frames", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"diffmf_demo: error: {tmp_path / 'scene_bag'} exists and is not a bag this demo wrote;"
                   " choose another --out"]


def test_shared_pairs_become_a_registered_panning_sequence(shared_data):
    from diffmf_ros.shared_pairs import panning_sequence

    pairs = panning_sequence(shared_data, 6, rate_hz=10.0, width=W, height=H, pairs=2)
    assert len(pairs) == 6
    assert [p.visible_stamp_ns - pairs[0].visible_stamp_ns for p in pairs] == [i * 100_000_000 for i in range(6)]
    assert all(p.thermal.shape == (H, W) and p.visible.shape == (H, W, 3) for p in pairs)
    assert all(p.thermal_stamp_ns > p.visible_stamp_ns for p in pairs)
    assert (pairs[0].thermal != pairs[2].thermal).any()  # the camera pans within one pair
