"""Where the offline tool puts fused frames: a bag topic, an MP4 file, a folder of PNGs.

Each sink takes frames one at a time and is closed on every exit path, so a run that
stops early still leaves a playable video, readable PNGs and a valid bag.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from rosbags.interfaces import Connection

from .bag_io import IMAGE, BagWriteError, BagWriter, build_image

__all__ = ["BagSink", "FrameSink", "PngSink", "VideoSink", "to_bgr"]


class FrameSink(Protocol):
    def write(self, fused: np.ndarray, stamp_ns: int, log_ns: int, frame_id: str) -> None: ...

    def close(self) -> None: ...


def to_bgr(image: np.ndarray) -> np.ndarray:
    """uint8 gray or RGB -> 3-channel BGR, what OpenCV's writers want."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image[:, :, ::-1])


class BagSink:
    """Fused frames as sensor_msgs/Image on ``topic`` of an (already open) output bag."""

    def __init__(self, bag: BagWriter, topic: str, encoding: str) -> None:
        self.bag, self.encoding = bag, encoding
        self.connection: Connection = bag.add_topic(topic, IMAGE)

    def write(self, fused: np.ndarray, stamp_ns: int, log_ns: int, frame_id: str) -> None:
        self.bag.write_message(self.connection, log_ns, build_image(fused, self.encoding, stamp_ns, frame_id))

    def close(self) -> None:
        """The bag itself is closed by its owner (it may hold copied topics too)."""


class VideoSink:
    """An MP4 (OpenCV's mp4v codec). Frames of another size than the first are scaled to it."""

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, fused: np.ndarray, stamp_ns: int, log_ns: int, frame_id: str) -> None:
        frame = to_bgr(fused)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (frame.shape[1], frame.shape[0])
            writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
            if not writer.isOpened():
                raise BagWriteError(self.path, "OpenCV cannot open an mp4v video writer here")
            self._writer = writer
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.release()


class PngSink:
    """One lossless PNG per fused frame, named ``<index>_<stamp ns>.png`` so they sort by time."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BagWriteError(self.folder, f"cannot create the PNG folder ({exc.strerror})") from None
        self.frames = 0

    def write(self, fused: np.ndarray, stamp_ns: int, log_ns: int, frame_id: str) -> None:
        path = self.folder / f"{self.frames:06d}_{stamp_ns}.png"
        if not cv2.imwrite(str(path), to_bgr(fused) if fused.ndim == 3 else fused):
            raise BagWriteError(path, "could not write the PNG")
        self.frames += 1

    def close(self) -> None:
        """Every PNG is complete once written."""
