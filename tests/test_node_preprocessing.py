"""The node's ROS-free pieces: thermal normalisation, registration, parameter validation, config file."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from diffmf_ros.params import PARAMETERS, settings_from_values
from diffmf_ros.registration import Registration, RegistrationError
from diffmf_ros.resources import default_params_file
from diffmf_ros.thermal import ThermalNormaliser, ThermalSettings

CONFIG = Path(__file__).resolve().parents[1] / "config" / "diffmf.yaml"


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# -- thermal normalisation -----------------------------------------------------------------
def test_auto_passes_8_bit_and_stretches_16_bit():
    normalise = ThermalNormaliser()
    eight = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert normalise(eight) is eight
    raw = np.linspace(29000, 31000, 1000).astype(np.uint16).reshape(20, 50)
    out = normalise(raw)
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.45 < out[10, 25] < 0.55  # mid-range counts land mid-gray


def test_fixed_range_and_clipping():
    normalise = ThermalNormaliser(ThermalSettings(mode="fixed", fixed_min=1000, fixed_max=2000))
    out = normalise(np.array([[500, 1000, 1500, 2000, 9000]], np.uint16))
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.5, 1.0, 1.0]])


def test_temperature_window_in_centikelvin():
    settings = ThermalSettings(mode="temperature", temperature_min=20.0, temperature_max=40.0)
    raw = np.round((np.array([[10.0, 20.0, 30.0, 40.0, 50.0]]) + 273.15) * 100).astype(np.uint16)
    np.testing.assert_allclose(ThermalNormaliser(settings)(raw), [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-3)


def test_percentile_smoothing_steadies_the_range():
    frame = np.linspace(1000, 2000, 400).astype(np.uint16).reshape(20, 20)
    hot = frame.copy()
    hot[:10] = 60000  # a hot object fills half the view
    jumpy = ThermalNormaliser(ThermalSettings(mode="percentile"))
    steady = ThermalNormaliser(ThermalSettings(mode="percentile", smoothing=0.9))
    for normalise in (jumpy, steady):
        normalise(frame)
    assert steady(hot)[15, 10] > jumpy(hot)[15, 10]  # the cool half is not crushed to black at once
    steady.reset()
    np.testing.assert_allclose(steady(frame), jumpy(frame))


def test_flat_frame_is_mid_gray_not_a_division_by_zero():
    out = ThermalNormaliser(ThermalSettings(mode="percentile"))(np.full((4, 4), 3000, np.uint16))
    np.testing.assert_array_equal(out, 0.5)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (ThermalSettings(mode="sepia"), "mode 'sepia' is not one of"),
        (ThermalSettings(mode="fixed", fixed_min=5, fixed_max=5), "fixed_max"),
        (ThermalSettings(percentile_low=99, percentile_high=1), "percentiles"),
        (ThermalSettings(smoothing=1.0), "smoothing"),
        (ThermalSettings(mode="temperature", temperature_min=50, temperature_max=10), "temperature_max"),
    ],
)
def test_bad_normalisation_settings(settings, words):
    with pytest.raises(ValueError, match=words):
        ThermalNormaliser(settings)


# -- registration --------------------------------------------------------------------------
def test_none_refuses_different_sizes():
    register = Registration("none")
    thermal = np.zeros((4, 6), np.float32)
    assert register(thermal, (4, 6, 3)) is thermal
    with pytest.raises(RegistrationError, match="thermal 6x4 and visible 12x8 differ in size") as caught:
        register(thermal, (8, 12, 3))
    assert caught.value.reason == "size_mismatch"


def test_resize_scales_to_the_visible_size():
    out = Registration("resize")(np.ones((4, 6), np.float32), (8, 12))
    assert out.shape == (8, 12) and np.allclose(out, 1.0)


def test_homography_shifts_into_the_visible_frame():
    thermal = np.zeros((10, 10), np.float32)
    thermal[2, 3] = 1.0
    shift = [1, 0, 4, 0, 1, 1, 0, 0, 1]  # +4 px right, +1 px down
    out = Registration("homography", shift)(thermal, (12, 16))
    assert out.shape == (12, 16)
    assert np.unravel_index(np.argmax(out), out.shape) == (3, 7)


@pytest.mark.parametrize(
    ("mode", "homography", "words"),
    [("warp", None, "is not one of"), ("homography", [1, 0, 0], "needs 9 numbers"),
     ("homography", [0] * 9, "not invertible")],
)
def test_bad_registration_settings(mode, homography, words):
    with pytest.raises(ValueError, match=words):
        Registration(mode, homography)


# -- parameters ----------------------------------------------------------------------------
def test_config_file_lists_every_parameter_with_its_default():
    tree = yaml.safe_load(CONFIG.read_text())
    params = _flatten(tree["/**"]["ros__parameters"])
    assert set(params) == set(PARAMETERS)
    for name, (default, _) in PARAMETERS.items():
        assert params[name] == default, name
    settings_from_values(params)  # and they validate


def test_the_installed_config_is_this_file(monkeypatch, tmp_path):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))  # a ROS environment without this package
    assert default_params_file().read_text() == CONFIG.read_text()


def test_default_topics_are_relative():
    settings = settings_from_values({})
    assert settings.thermal.topic == "thermal/image_raw"
    assert settings.visible.topic == "visible/image_raw"
    assert settings.output_topic == "fused/image_raw"
    compressed = settings_from_values({"thermal.transport": "compressed"})
    assert compressed.thermal.subscribed_topic == "thermal/image_raw/compressed"


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"sync.slop": -0.1}, "parameter sync.slop: must be >= 0"),
        ({"sync.queue_size": 0}, "parameter sync.queue_size: must be >= 1"),
        ({"sync.queue_size": 2.5}, "parameter sync.queue_size: expected an integer"),
        ({"sync.backend": "magic"}, "parameter sync.backend: 'magic' is not one of diffmf, message_filters"),
        ({"output.encoding": "yuv"}, "parameter output.encoding"),
        ({"qos.input.reliability": "sometimes"}, "parameter qos.input.reliability"),
        ({"registration.homography": [1.0, 2.0]}, "parameter registration.homography: needs 9 numbers"),
        ({"thermal_normalisation.mode": "sepia"}, "thermal_normalisation"),
        ({"health.camera_timeout": 0}, "parameter health.camera_timeout: must be > 0"),
        ({"output.debug": "yes"}, "parameter output.debug: expected true or false"),
        ({"thermal.topic": ""}, "parameter thermal.topic: must not be empty"),
        ({"sync.slopp": 0.1}, "unknown parameter"),
    ],
)
def test_bad_parameters_name_the_parameter(values, words):
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        settings_from_values(values)


def test_integers_are_accepted_where_numbers_are_expected():
    settings = settings_from_values({"sync.slop": 1, "registration.homography": [1, 0, 0, 0, 1, 0, 0, 0, 1]})
    assert settings.slop == 1.0 and settings.homography[0] == 1.0
