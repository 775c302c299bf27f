"""Write a thermal/visible sequence into a ROS 2 bag, as two cameras and a recorder would have.

The demo records its generated scene with this before playing it through the node, and the
tests build their input bags with it (both storage plugins, Image and CompressedImage).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bag_io import COMPRESSED, IMAGE, BagWriter, build_compressed, build_image
from .synthetic_scene import ScenePair

__all__ = ["FORMATS", "CameraTopic", "write_scene_bag"]

# How a camera's frames go into the bag: a raw Image in the given encoding, or compressed.
FORMATS = ("raw", "png", "jpeg")


@dataclass(frozen=True)
class CameraTopic:
    topic: str
    fmt: str = "raw"  # one of FORMATS
    encoding: str = ""  # raw only; default mono8/mono16 (by dtype) for thermal, bgr8 for visible
    frame_id: str = ""

    @property
    def msgtype(self) -> str:
        return IMAGE if self.fmt == "raw" else COMPRESSED


def write_scene_bag(
    path: str | os.PathLike,
    pairs: Iterable[ScenePair],
    thermal: CameraTopic = CameraTopic("/thermal/image_raw", frame_id="thermal_camera"),
    visible: CameraTopic = CameraTopic("/visible/image_raw", frame_id="visible_camera"),
    storage: str = "mcap",
    delivery_delay_s: float = 0.002,
) -> dict[str, int]:
    """Write every pair; each message is logged ``delivery_delay_s`` after its header stamp.

    Returns messages written per topic.
    """
    for camera in (thermal, visible):
        if camera.fmt not in FORMATS:
            raise ValueError(f"camera format '{camera.fmt}' for {camera.topic} is not one of {', '.join(FORMATS)}")
    delay_ns = int(round(delivery_delay_s * 1e9))
    with BagWriter(Path(path), storage) as bag:
        conns = {name: bag.add_topic(cam.topic, cam.msgtype) for name, cam in (("thermal", thermal),
                                                                              ("visible", visible))}
        for pair in pairs:
            frames = [
                ("thermal", thermal, pair.thermal, pair.thermal_stamp_ns,
                 "mono16" if pair.thermal.dtype == np.uint16 else "mono8"),
                ("visible", visible, pair.visible, pair.visible_stamp_ns, "bgr8"),
            ]
            for name, camera, array, stamp, default_encoding in sorted(frames, key=lambda f: f[3]):
                if camera.fmt == "raw":
                    msg = build_image(array, camera.encoding or default_encoding, stamp, camera.frame_id)
                else:
                    msg = build_compressed(array, camera.fmt, stamp, camera.frame_id)
                bag.write_message(conns[name], stamp + delay_ns, msg)
        return dict(bag.counts)
