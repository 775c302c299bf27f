"""Checkpoints: bit-exact round trip, safe loading, and one-line errors naming the problem."""

import pickle

import pytest
import torch

from diffmf_core import CheckpointError, build_model, load_model, read_checkpoint_config, save_checkpoint

SMALL = dict(dim=8, stem_dim=4, d_state=4, ce_d_state=4, ce_heads=2)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return build_model("tiny", **{**SMALL, **kw}).eval()


def test_round_trip_is_bit_exact(tmp_path):
    model = _model()
    path = save_checkpoint(model, tmp_path / "m.safetensors", metadata={"iteration": "7"})
    loaded = load_model(path)
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.rand(1, 1, 21, 30), torch.rand(1, 1, 21, 30)
    with torch.no_grad():
        assert torch.equal(model(*x), loaded(*x))
    assert read_checkpoint_config(path) == model.config
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_truncated_file_fails_with_one_line(tmp_path):
    path = save_checkpoint(_model(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg


def test_mismatched_shapes_name_the_first_tensor(tmp_path):
    wide = _model(dim=16)
    path = tmp_path / "wide.safetensors"
    save_checkpoint(wide.state_dict(), path, config=_model().config)  # weights of one config, label of another
    with pytest.raises(CheckpointError, match=r"tensor '[\w.]+' has shape .* the config needs"):
        load_model(path)


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    model = _model()
    state = dict(model.state_dict())
    name = next(iter(state))
    del state[name]
    save_checkpoint(state, tmp_path / "a.safetensors", config=model.config)
    with pytest.raises(CheckpointError, match=f"missing tensor '{name}'"):
        load_model(tmp_path / "a.safetensors")
    state = dict(model.state_dict(), extra_weight=torch.zeros(1))
    save_checkpoint(state, tmp_path / "b.safetensors", config=model.config)
    with pytest.raises(CheckpointError, match="unexpected tensor 'extra_weight'"):
        load_model(tmp_path / "b.safetensors")


def test_not_a_checkpoint_and_missing_file(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(junk)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "absent.safetensors")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # the hand-made evil pickle
def test_legacy_pth_loads_weights_only_and_refuses_code(tmp_path):
    model = _model()
    good = tmp_path / "legacy.pth"
    torch.save({"params_ema": {f"module.{k}": v for k, v in model.state_dict().items()}}, good)
    loaded = load_model(good, preset="tiny", **SMALL)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(CheckpointError, match="carries no config"):
        load_model(good)

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(CheckpointError, match="weights-only"):
        load_model(evil, preset="tiny")
