"""Options: the shipped KAIR-style file loads, overrides apply, and every unknown key is named."""

import json

import pytest
from diffmf_training.options import (
    DEFAULT_OPTIONS,
    OptionsError,
    load_options,
    model_config,
    normalise,
    strip_comments,
)

from diffmf_core import get_config


def test_shipped_file_has_the_names_other_parts_rely_on():
    opt = load_options(DEFAULT_OPTIONS)
    assert opt["task"] and isinstance(opt["dist"], bool) and opt["path"]["root"]
    data = opt["datasets"]["train"]
    assert isinstance(data["dataroot"], list)
    for key in ("A_dir", "B_dir", "H_size", "batch_size", "num_workers"):
        assert key in data
    assert opt["netG"]["preset"] == "tiny"
    for key in ("G_lossfn_weights", "G_optimizer_lr", "G_scheduler_milestones", "G_scheduler_gamma", "E_decay",
                "checkpoint_save", "max_iter", "amp"):
        assert key in opt["train"]
    assert opt["train"]["G_lossfn_weights"] == {"intensity": 20, "gradient": 20, "ssim": 10}


def test_comments_are_stripped_but_not_inside_strings():
    text = '{"a": "http://x//y", // note\n "b": 1 // more\n}'
    assert json.loads(strip_comments(text)) == {"a": "http://x//y", "b": 1}


def test_set_overrides_take_json_values_and_plain_strings():
    opt = load_options(None, ["train.max_iter=7", "netG.dim=16", "datasets.train.dataroot=some/folder",
                              'datasets.train.exclude=["TNO/*[02468]"]', "train.max_minutes=2.5"])
    assert opt["train"]["max_iter"] == 7
    assert opt["datasets"]["train"]["dataroot"] == ["some/folder"]  # one folder becomes a list
    assert opt["datasets"]["train"]["exclude"] == ["TNO/*[02468]"]
    assert opt["train"]["max_minutes"] == 2.5
    assert model_config(opt) == get_config("tiny", dim=16)


@pytest.mark.parametrize("override,named", [
    ("train.max_itr=5", "train.max_itr"),
    ("datasets.train.H_sise=64", "datasets.train.H_sise"),
    ("netG.dimm=3", "netG.dimm"),
    ("gpu_ids=[0]", "gpu_ids"),
])
def test_unknown_keys_are_errors_that_name_them(override, named):
    with pytest.raises(OptionsError, match=named.replace(".", r"\.")):
        load_options(None, [override])


def test_unknown_keys_in_a_file_are_all_named(tmp_path):
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"train": {"lr": 1, "max_iter": 3}, "extra": 1}))
    with pytest.raises(OptionsError) as err:
        load_options(path)
    assert "train.lr" in str(err.value) and "extra" in str(err.value)


@pytest.mark.parametrize("override,message", [
    ('datasets.train.H_size="big"', "H_size"),
    ("train.E_decay=1.5", "E_decay"),
    ("train.amp=fp32", "amp"),
    ("train.G_scheduler_milestones=[300,100]", "milestones"),
    ("datasets.train.batch_size=0", "batch_size"),
    ("netG.ce_heads=3", "netG"),
    ("train.G_lossfn_weights.ssim=-1", "G_lossfn_weights"),
    ("train.max_minutes=0", "max_minutes"),
])
def test_bad_values_are_errors_that_name_the_key(override, message):
    with pytest.raises(OptionsError, match=message):
        load_options(None, [override])


def test_amp_accepts_booleans_like_other_kair_descendants():
    assert normalise({"train": {"amp": True}})["train"]["amp"] == "auto"
    assert normalise({"train": {"amp": False}})["train"]["amp"] == "off"


def test_missing_file_and_broken_json_are_one_line_errors(tmp_path):
    with pytest.raises(OptionsError, match="does not exist"):
        load_options(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"task": }')
    with pytest.raises(OptionsError, match="not valid JSON"):
        load_options(bad)
