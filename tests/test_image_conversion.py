"""Image <-> NumPy conversion: every promised encoding, step padding, byte order, compressed, bad input."""

from types import SimpleNamespace

import numpy as np
import pytest

from diffmf_ros.image_conversion import (
    ENCODINGS,
    ImageConversionError,
    compressed_to_numpy,
    encode_compressed,
    image_to_numpy,
    numpy_to_image_fields,
)

RNG = np.random.default_rng(7)


def _array_for(encoding: str, height: int = 5, width: int = 7) -> np.ndarray:
    layout = ENCODINGS[encoding]
    shape = (height, width) if layout.channels == 1 else (height, width, 3)
    if layout.dtype == np.float32:
        return RNG.random(shape, dtype=np.float32)
    return RNG.integers(0, np.iinfo(layout.dtype).max, shape, endpoint=True).astype(layout.dtype)


def _msg(**fields) -> SimpleNamespace:
    return SimpleNamespace(**fields)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_every_encoding_round_trips(encoding):
    array = _array_for(encoding)
    fields = numpy_to_image_fields(array, encoding)
    assert fields["step"] * fields["height"] == fields["data"].size
    back = image_to_numpy(_msg(**fields))
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_colour_comes_back_rgb_whatever_the_wire_order():
    bgr = _msg(height=1, width=2, encoding="bgr8", is_bigendian=0, step=6, data=bytes([1, 2, 3, 4, 5, 6]))
    np.testing.assert_array_equal(image_to_numpy(bgr), [[[3, 2, 1], [6, 5, 4]]])
    rgba = _msg(height=1, width=1, encoding="rgba8", is_bigendian=0, step=4, data=bytes([10, 20, 30, 255]))
    np.testing.assert_array_equal(image_to_numpy(rgba), [[[10, 20, 30]]])
    bgra = _msg(height=1, width=1, encoding="bgra8", is_bigendian=0, step=4, data=bytes([10, 20, 30, 255]))
    np.testing.assert_array_equal(image_to_numpy(bgra), [[[30, 20, 10]]])


def test_row_padding_through_step_is_skipped():
    array = _array_for("mono16", 4, 3)
    padded = np.zeros((4, 10), np.uint8)  # 6 bytes of pixels + 4 bytes of padding per row
    padded[:, :6] = array.view(np.uint8).reshape(4, 6)
    padded[:, 6:] = 0xAB
    msg = _msg(height=4, width=3, encoding="mono16", is_bigendian=0, step=10, data=padded.tobytes())
    np.testing.assert_array_equal(image_to_numpy(msg), array)


def test_big_endian_data_is_swapped_to_native():
    array = np.array([[1, 256, 0x1234]], np.uint16)
    wire = array.astype(">u2").tobytes()
    msg = _msg(height=1, width=3, encoding="16UC1", is_bigendian=1, step=6, data=wire)
    back = image_to_numpy(msg)
    assert back.dtype == np.uint16 and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    floats = np.array([[0.25, 0.5]], np.float32)
    wire = floats.astype(">f4").tobytes()
    msg = _msg(height=1, width=2, encoding="32FC1", is_bigendian=1, step=8, data=wire)
    np.testing.assert_array_equal(image_to_numpy(msg), floats)


def test_returned_array_does_not_alias_the_message_buffer():
    data = bytearray(range(6))
    back = image_to_numpy(_msg(height=2, width=3, encoding="mono8", is_bigendian=0, step=3, data=data))
    data[0] = 99
    assert back[0, 0] == 0 and back.flags.writeable


@pytest.mark.parametrize(
    ("fields", "reason", "words"),
    [
        (dict(encoding="yuv422"), "unsupported_encoding", "unsupported encoding 'yuv422'"),
        (dict(data=bytes(11)), "short_data", "data has 11 bytes but step*height needs 12"),
        (dict(height=0, step=3, data=b""), "zero_size", "zero size"),
        (dict(width=0, step=0, data=b""), "zero_size", "zero size"),
        (dict(step=2), "bad_step", "step 2 is shorter"),
    ],
)
def test_bad_images_raise_with_a_named_reason(fields, reason, words):
    good = dict(height=4, width=3, encoding="mono8", is_bigendian=0, step=3, data=bytes(12))
    msg = _msg(**{**good, **fields})
    with pytest.raises(ImageConversionError, match=words.replace("*", r"\*")) as caught:
        image_to_numpy(msg)
    assert caught.value.reason == reason
    assert isinstance(caught.value, ValueError)


def test_nan_in_32fc1_is_refused():
    floats = np.array([[0.1, np.nan], [np.inf, 0.2]], np.float32)
    msg = _msg(height=2, width=2, encoding="32FC1", is_bigendian=0, step=8, data=floats.tobytes())
    with pytest.raises(ImageConversionError, match="2 NaN/Inf pixels") as caught:
        image_to_numpy(msg)
    assert caught.value.reason == "non_finite"


def test_frames_over_the_pixel_limit_are_refused_before_copying():
    msg = _msg(height=100, width=100, encoding="mono8", is_bigendian=0, step=100, data=bytes(10))
    with pytest.raises(ImageConversionError, match="above the limit of 5000") as caught:
        image_to_numpy(msg, max_pixels=5000)
    assert caught.value.reason == "too_large"


def test_png_keeps_16_bit_and_colour_comes_back_rgb():
    thermal = _array_for("mono16", 16, 20)
    fields = encode_compressed(thermal, "png")
    assert fields["format"] == "mono16; png compressed mono16"
    back = compressed_to_numpy(_msg(**fields))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, thermal)

    colour = _array_for("rgb8", 16, 20)
    fields = encode_compressed(colour, "png")
    assert fields["format"].startswith("bgr8;")
    np.testing.assert_array_equal(compressed_to_numpy(_msg(**fields)), colour)


def test_jpeg_colour_order_survives_lossy_coding():
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 220
    back = compressed_to_numpy(_msg(**encode_compressed(red, "jpeg")))
    assert back.shape == (32, 32, 3)
    assert back[..., 0].mean() > 200 and back[..., 2].mean() < 30
    with pytest.raises(ImageConversionError, match="jpeg cannot hold uint16"):
        encode_compressed(np.zeros((4, 4), np.uint16), "jpeg")


def test_compressed_depth_header_is_skipped():
    depth = _array_for("16UC1", 8, 8)
    png = encode_compressed(depth, "png")["data"]
    data = np.concatenate([np.zeros(12, np.uint8), png])
    back = compressed_to_numpy(_msg(format="16UC1; compressedDepth png", data=data))
    np.testing.assert_array_equal(back, depth)


@pytest.mark.parametrize(
    ("data", "reason"), [(b"", "zero_size"), (b"definitely not an image", "decode_failed")]
)
def test_bad_compressed_images_raise(data, reason):
    with pytest.raises(ImageConversionError) as caught:
        compressed_to_numpy(_msg(format="png", data=data))
    assert caught.value.reason == reason


def test_compressed_pixel_limit():
    fields = encode_compressed(np.zeros((50, 50), np.uint8), "png")
    with pytest.raises(ImageConversionError, match="above the limit"):
        compressed_to_numpy(_msg(**fields), max_pixels=100)


def test_output_fields_check_shape_and_dtype():
    with pytest.raises(ImageConversionError, match="needs dtype uint8, got uint16"):
        numpy_to_image_fields(np.zeros((2, 2), np.uint16), "mono8")
    with pytest.raises(ImageConversionError, match="needs H x W x 3"):
        numpy_to_image_fields(np.zeros((2, 2), np.uint8), "bgr8")
    fields = numpy_to_image_fields(np.zeros((2, 3, 3), np.uint8), "bgr8", as_bytes=True)
    assert isinstance(fields["data"], bytes) and fields["step"] == 9


def test_rclpy_messages_convert_both_ways():
    image_msg = pytest.importorskip("sensor_msgs.msg")
    colour = _array_for("rgb8", 6, 9)
    msg = image_msg.Image(**numpy_to_image_fields(colour, "bgr8", as_bytes=True))
    np.testing.assert_array_equal(image_to_numpy(msg), colour)
    compressed = image_msg.CompressedImage(**encode_compressed(colour, "png", as_bytes=True))
    np.testing.assert_array_equal(compressed_to_numpy(compressed), colour)


def test_rosbags_messages_convert_both_ways():
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    image_type = store.types["sensor_msgs/msg/Image"]
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="thermal"
    )
    thermal = _array_for("mono16", 6, 9)
    msg = image_type(header=header, **numpy_to_image_fields(thermal, "mono16"))
    raw = store.serialize_cdr(msg, image_type.__msgtype__)
    np.testing.assert_array_equal(image_to_numpy(store.deserialize_cdr(raw, image_type.__msgtype__)), thermal)
