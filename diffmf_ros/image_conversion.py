"""sensor_msgs/Image and CompressedImage <-> NumPy, without cv_bridge and without rclpy.

cv_bridge breaks with NumPy 2 and is not pip-installable, and rosbags-image ignores
``step``; this module is the one place that turns message bytes into arrays. It reads
only plain attributes (``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``,
``data``; ``format``/``data`` for CompressedImage), so it works the same on rclpy
messages and on messages deserialised by rosbags.

Array conventions (what the fusion engine expects):
    * one-channel images come back as ``H x W``; colour as ``H x W x 3`` in **RGB** order
      (alpha is dropped), whatever the channel order on the wire;
    * the dtype of the encoding is kept (uint8, uint16, float32), in native byte order;
    * returned arrays own their memory, so the message buffer may be reused.

Every problem raises :class:`ImageConversionError` with a one-line message naming it and
a short ``reason`` code that the node and the bag tool count drops by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "ENCODINGS",
    "ImageConversionError",
    "compressed_to_numpy",
    "encode_compressed",
    "image_to_numpy",
    "numpy_to_image_fields",
]


class ImageConversionError(ValueError):
    """An image message that cannot be turned into an array (or back).

    ``reason`` is a short, stable code for counting drops: ``unsupported_encoding``,
    ``zero_size``, ``bad_step``, ``short_data``, ``too_large``, ``non_finite``,
    ``decode_failed``, ``bad_array``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Layout:
    dtype: np.dtype
    channels: int
    order: str  # "gray", "rgb", "bgr", "rgba", "bgra"


def _layout(dtype: str, channels: int, order: str) -> _Layout:
    return _Layout(np.dtype(dtype), channels, order)


# The 8UC3/8UC4/16UC3 generic encodings follow OpenCV's (and cv_bridge's) BGR convention.
ENCODINGS: dict[str, _Layout] = {
    "mono8": _layout("u1", 1, "gray"),
    "8UC1": _layout("u1", 1, "gray"),
    "mono16": _layout("u2", 1, "gray"),
    "16UC1": _layout("u2", 1, "gray"),
    "32FC1": _layout("f4", 1, "gray"),
    "bgr8": _layout("u1", 3, "bgr"),
    "rgb8": _layout("u1", 3, "rgb"),
    "8UC3": _layout("u1", 3, "bgr"),
    "bgra8": _layout("u1", 4, "bgra"),
    "rgba8": _layout("u1", 4, "rgba"),
    "8UC4": _layout("u1", 4, "bgra"),
    "bgr16": _layout("u2", 3, "bgr"),
    "rgb16": _layout("u2", 3, "rgb"),
    "16UC3": _layout("u2", 3, "bgr"),
    "bgra16": _layout("u2", 4, "bgra"),
    "rgba16": _layout("u2", 4, "rgba"),
}


def _to_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    """H x W x C in the wire order -> H x W (gray) or H x W x 3 RGB, always a fresh array."""
    if order == "gray":
        return np.array(pixels[:, :, 0], copy=True)
    if order in ("bgr", "bgra"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.array(pixels[:, :, :3], copy=True)


def _check_size(height: int, width: int, max_pixels: int | None, what: str) -> None:
    if height <= 0 or width <= 0:
        raise ImageConversionError("zero_size", f"{what} has zero size ({width}x{height})")
    if max_pixels is not None and height * width > max_pixels:
        raise ImageConversionError(
            "too_large",
            f"{what} is {width}x{height} = {height * width} pixels, above the limit of {max_pixels}",
        )


def _check_finite(array: np.ndarray, what: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ImageConversionError("non_finite", f"{what} has {bad} NaN/Inf pixels")


def image_to_numpy(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """Pixels of a sensor_msgs/Image as H x W or H x W x 3 (RGB), honouring ``step`` and byte order.

    ``max_pixels`` rejects frames larger than the configured maximum before any copy is made.
    """
    encoding = str(msg.encoding)
    layout = ENCODINGS.get(encoding)
    if layout is None:
        raise ImageConversionError(
            "unsupported_encoding",
            f"unsupported encoding '{encoding}' (supported: {', '.join(ENCODINGS)})",
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(height, width, max_pixels, f"{encoding} image")
    row_bytes = width * layout.channels * layout.dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            "bad_step", f"step {step} is shorter than one {encoding} row of width {width} ({row_bytes} bytes)"
        )
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    needed = step * height
    if buffer.size < needed:
        raise ImageConversionError(
            "short_data",
            f"data has {buffer.size} bytes but step*height needs {needed} ({encoding} {width}x{height})",
        )
    rows = buffer[:needed].reshape(height, step)[:, :row_bytes]
    wire_dtype = layout.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = np.ascontiguousarray(rows).view(wire_dtype).reshape(height, width, layout.channels)
    array = _to_rgb(pixels, layout.order)
    if array.dtype != layout.dtype:
        array = array.astype(layout.dtype)
    _check_finite(array, f"{encoding} image")
    return array


def _png_payload(data: np.ndarray) -> np.ndarray:
    """compressedDepth messages put a small config header in front of the PNG stream."""
    signature = np.frombuffer(b"\x89PNG", np.uint8)
    head = data[:64]
    for start in range(max(0, head.size - 3)):
        if np.array_equal(head[start : start + 4], signature):
            return data[start:]
    return data


def compressed_to_numpy(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage with OpenCV; 16-bit PNG stays uint16, colour comes back RGB."""
    fmt = str(msg.format)
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageConversionError("zero_size", f"compressed image (format '{fmt}') has no data")
    if "compresseddepth" in fmt.lower():
        if "32fc1" in fmt.lower():
            raise ImageConversionError(
                "unsupported_encoding",
                f"unsupported encoding '{fmt}' (quantised 32FC1 depth is not an image)",
            )
        data = _png_payload(data)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageConversionError(
            "decode_failed",
            f"OpenCV could not decode the compressed image (format '{fmt}', {data.size} bytes)",
        )
    height, width = decoded.shape[:2]
    _check_size(height, width, max_pixels, f"compressed image (format '{fmt}')")
    if decoded.ndim == 2:
        array = decoded
    elif decoded.shape[2] == 1:
        array = decoded[:, :, 0]
    else:
        # OpenCV decodes colour as BGR(A), which is also what image_transport encodes.
        array = np.ascontiguousarray(decoded[:, :, 2::-1])
    _check_finite(array, f"compressed image (format '{fmt}')")
    return array


def _from_rgb(array: np.ndarray, order: str) -> np.ndarray:
    if order == "gray":
        return array[:, :, None] if array.ndim == 2 else array
    if order == "rgb":
        return array
    if order == "bgr":
        return array[:, :, ::-1]
    alpha = np.full(array.shape[:2] + (1,), np.iinfo(array.dtype).max, array.dtype)
    colour = array[:, :, ::-1] if order == "bgra" else array
    return np.concatenate([colour, alpha], axis=2)


def numpy_to_image_fields(array: np.ndarray, encoding: str, *, as_bytes: bool = False) -> dict[str, Any]:
    """Fields of a sensor_msgs/Image holding ``array`` (H x W, or H x W x 3 RGB) in ``encoding``.

    Returns ``height, width, encoding, is_bigendian, step, data`` (little-endian, no padding).
    ``data`` is a 1-D uint8 ndarray, as rosbags messages need; pass ``as_bytes=True`` for
    rclpy, whose ``data`` setter copies ``bytes`` fast but walks an ndarray element by element.
    The array's dtype must match the encoding (no silent rescaling).
    """
    layout = ENCODINGS.get(encoding)
    if layout is None:
        raise ImageConversionError(
            "unsupported_encoding", f"unsupported encoding '{encoding}' (supported: {', '.join(ENCODINGS)})"
        )
    array = np.asarray(array)
    channels = 1 if array.ndim == 2 else (array.shape[2] if array.ndim == 3 else -1)
    expected = 1 if layout.order == "gray" else 3
    if channels != expected:
        raise ImageConversionError(
            "bad_array",
            f"encoding '{encoding}' needs {'H x W' if expected == 1 else 'H x W x 3 (RGB)'},"
            f" got shape {array.shape}",
        )
    if array.dtype != layout.dtype:
        raise ImageConversionError(
            "bad_array", f"encoding '{encoding}' needs dtype {layout.dtype}, got {array.dtype}"
        )
    height, width = array.shape[:2]
    _check_size(height, width, None, "array")
    wire = np.ascontiguousarray(_from_rgb(array, layout.order), dtype=layout.dtype.newbyteorder("<"))
    flat = wire.reshape(-1).view(np.uint8)
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": width * layout.channels * layout.dtype.itemsize,
        "data": flat.tobytes() if as_bytes else flat,
    }


def encode_compressed(array: np.ndarray, fmt: str = "png", *, as_bytes: bool = False) -> dict[str, Any]:
    """Fields ``format, data`` of a sensor_msgs/CompressedImage holding ``array`` (H x W or H x W x 3 RGB).

    ``fmt`` is ``png`` or ``jpeg``/``jpg``; the format string follows image_transport's
    compressed plugin (e.g. ``"mono16; png compressed mono16"``, ``"bgr8; jpeg compressed bgr8"``).
    JPEG holds 8-bit data only; PNG keeps uint16.
    """
    kind = fmt.lower()
    if kind == "jpg":
        kind = "jpeg"
    if kind not in ("png", "jpeg"):
        raise ImageConversionError(
            "unsupported_encoding", f"unsupported compression '{fmt}' (use png or jpeg)"
        )
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16) or (kind == "jpeg" and array.dtype != np.uint8):
        raise ImageConversionError("bad_array", f"{kind} cannot hold {array.dtype} pixels")
    if array.ndim == 2:
        encoding = "mono8" if array.dtype == np.uint8 else "mono16"
        wire = array
    elif array.ndim == 3 and array.shape[2] == 3:
        encoding = "bgr8" if array.dtype == np.uint8 else "bgr16"
        wire = np.ascontiguousarray(array[:, :, ::-1])
    else:
        raise ImageConversionError("bad_array", f"cannot compress an array of shape {array.shape}")
    _check_size(array.shape[0], array.shape[1], None, "array")
    ok, encoded = cv2.imencode("." + ("png" if kind == "png" else "jpg"), wire)
    if not ok:
        raise ImageConversionError(
            "decode_failed", f"OpenCV could not encode a {array.shape} array as {kind}"
        )
    flat = encoded.reshape(-1)
    return {
        "format": f"{encoding}; {kind} compressed {encoding}",
        "data": flat.tobytes() if as_bytes else flat,
    }
