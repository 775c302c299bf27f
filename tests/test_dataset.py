"""Training pairs: matching, luma, bit depths, crops, the 8 symmetries, clear errors, split patterns, stream."""

import cv2
import numpy as np
import pytest
import torch
from diffmf_training.dataset import (
    DatasetError,
    FusionPairDataset,
    PairStreamSampler,
    augment,
    find_pairs,
    pad_to,
    select_pairs,
)
from training_support import write_pairs


def test_pairs_match_by_stem_across_several_dataroots(tmp_path):
    write_pairs(tmp_path / "A", n=3)
    write_pairs(tmp_path / "B", n=2, names=["x", "y"])
    pairs = find_pairs([tmp_path / "A", tmp_path / "B"])
    assert [p.name for p in pairs] == ["A/00", "A/01", "A/02", "B/x", "B/y"]
    assert all(p.ir.stem == p.vi.stem for p in pairs)


def test_rgb_visible_becomes_luma_and_16_bit_scales_by_depth(tmp_path):
    write_pairs(tmp_path / "C", n=1, colour=True, names=["c"])
    write_pairs(tmp_path / "S", n=1, sixteen_bit=True, names=["s"])
    ds = FusionPairDataset(find_pairs([tmp_path / "C", tmp_path / "S"]), patch_size=8, augment=False)
    rgb = cv2.imread(str(tmp_path / "C" / "vi" / "c.png"))[:, :, ::-1].astype(np.float32) / 255
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(ds.images[0][1], y, atol=1e-6)
    ir16 = cv2.imread(str(tmp_path / "S" / "ir" / "s.png"), cv2.IMREAD_UNCHANGED)
    assert ir16.dtype == np.uint16
    sample = ds[(0, 1)]
    assert sample["ir"].dtype == torch.float32 and sample["ir"].min() >= 0 and sample["ir"].max() <= 1
    levels = sample["ir"].numpy() * 65535  # whole 16-bit levels, well above the 8-bit range
    np.testing.assert_allclose(levels, np.round(levels), atol=0.05)
    assert levels.max() > 255 and levels.max() <= ir16.max()


def test_crops_are_aligned_and_small_images_are_padded(tmp_path):
    write_pairs(tmp_path / "A", n=1, size=(10, 12))
    ds = FusionPairDataset(find_pairs([tmp_path / "A"]), patch_size=16, augment=False)
    sample = ds[(5, 0)]
    assert sample["ir"].shape == (1, 16, 16) and sample["vi"].shape == (1, 16, 16)
    ir = ds.images[0][0].astype(np.float32) / 255
    np.testing.assert_allclose(sample["ir"][0, :10, :12].numpy(), ir, atol=1e-6)  # pad is bottom/right
    assert pad_to(np.ones((1, 1), np.uint8), 4).shape == (4, 4)


def test_the_eight_modes_are_distinct_and_applied_to_both_images(tmp_path):
    img = np.arange(12).reshape(3, 4)
    outs = {augment(img, m).tobytes() + bytes(augment(img, m).shape) for m in range(8)}
    assert len(outs) == 8
    write_pairs(tmp_path / "A", n=2, size=(20, 20))
    ds = FusionPairDataset(find_pairs([tmp_path / "A"]), patch_size=20)
    ir0, vi0 = (torch.from_numpy(x.astype(np.float32) / 255) for x in ds.images[0])
    for position in range(0, 40, 2):  # whole-image crops: the sample must be one symmetry of the pair
        s = ds[(position, 0)]
        modes = [m for m in range(8) if torch.allclose(torch.from_numpy(augment(ir0.numpy(), m).copy()), s["ir"][0])]
        assert modes and any(torch.allclose(torch.from_numpy(augment(vi0.numpy(), m).copy()), s["vi"][0])
                             for m in modes)


def test_a_sample_depends_only_on_its_stream_position(tmp_path):
    write_pairs(tmp_path / "A", n=3, size=(30, 30))
    ds1 = FusionPairDataset(find_pairs([tmp_path / "A"]), patch_size=16, seed=3)
    ds2 = FusionPairDataset(find_pairs([tmp_path / "A"]), patch_size=16, seed=3, cache=False)
    assert torch.equal(ds1[(7, 2)]["ir"], ds2[(7, 2)]["ir"])
    assert not torch.equal(ds1[(7, 2)]["ir"], ds1[(8, 2)]["ir"])


def test_problems_are_listed_together_with_the_count_of_good_pairs(tmp_path):
    root = tmp_path / "bad"
    write_pairs(root, n=4)
    (root / "ir" / "00.png").rename(root / "ir" / "lonely.png")  # 00 and lonely: no partner
    err = pytest.raises(DatasetError, find_pairs, [root]).value
    assert "lonely.png" in str(err) and "00.png" in str(err) and "(3 pair(s) fine)" in str(err)

    root2 = tmp_path / "bad2"
    write_pairs(root2, n=4)
    (root2 / "vi" / "01.png").write_bytes(b"not an image")
    cv2.imwrite(str(root2 / "vi" / "02.png"), np.zeros((5, 5), np.uint8))
    err = pytest.raises(DatasetError, FusionPairDataset, find_pairs([root2]), 16).value
    text = str(err)
    assert "01.png" in text and "not a readable image" in text
    assert "bad2/02" in text and "28x24 vs vi 5x5" in text
    assert "(2 pair(s) fine)" in text and "\n" not in text


def test_missing_folders_are_named(tmp_path):
    with pytest.raises(DatasetError, match="missing folder .*nowhere"):
        find_pairs([tmp_path / "nowhere"])


def test_evaluation_split_patterns_exclude_even_tno_and_msrs_0_to_4(tmp_path):
    write_pairs(tmp_path / "TNO", names=[f"{i:02d}" for i in range(1, 9)], size=(12, 12))
    write_pairs(tmp_path / "MSRS", names=["00004N", "00012N", "00055D", "00537D", "00881N"], size=(12, 12))
    write_pairs(tmp_path / "RoadScene", names=["FLIR_00211", "FLIR_04424"], size=(12, 12))
    pairs = find_pairs([tmp_path / "TNO", tmp_path / "MSRS", tmp_path / "RoadScene"])
    kept = select_pairs(pairs, exclude=["TNO/*[02468]", "MSRS/*[0-4][DN]"])
    assert [p.name for p in kept] == ["TNO/01", "TNO/03", "TNO/05", "TNO/07", "MSRS/00055D", "MSRS/00537D",
                                      "RoadScene/FLIR_00211", "RoadScene/FLIR_04424"]
    only = select_pairs(pairs, include=["FLIR_*"])
    assert [p.name for p in only] == ["RoadScene/FLIR_00211", "RoadScene/FLIR_04424"]


def test_patterns_from_a_list_file_and_patterns_that_match_nothing(tmp_path, caplog):
    write_pairs(tmp_path / "TNO", n=3)
    pairs = find_pairs([tmp_path / "TNO"])
    listing = tmp_path / "eval.txt"
    listing.write_text("# evaluation pairs\nTNO/00\n01.png\n")
    assert [p.name for p in select_pairs(pairs, exclude=[f"@{listing}"])] == ["TNO/02"]
    with pytest.raises(DatasetError, match="include: pattern\\(s\\) 'MSRS/\\*' match none"):
        select_pairs(pairs, include=["MSRS/*"])  # a typo must not shrink the set silently
    with caplog.at_level("WARNING", logger="diffmf_training"):
        assert len(select_pairs(pairs, exclude=["MSRS/*"])) == 3  # e.g. a split packed without those pairs
    assert "'MSRS/*' matches none of the 3 pairs" in caplog.text


def test_stream_is_the_same_however_it_is_split_or_resumed():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    whole = take(PairStreamSampler(5, 4, seed=1), 4 * 6)  # 6 iterations of a global batch of 4
    rank0 = take(PairStreamSampler(5, 4, 0, 2, seed=1), 2 * 6)
    rank1 = take(PairStreamSampler(5, 4, 1, 2, seed=1), 2 * 6)
    split = [k for i in range(6) for k in rank0[2 * i:2 * i + 2] + rank1[2 * i:2 * i + 2]]
    assert split == whole
    assert take(PairStreamSampler(5, 4, seed=1, start_iter=3), 12) == whole[12:]
    assert sorted(idx for _, idx in whole[:5]) == [0, 1, 2, 3, 4]  # every pair once per epoch
    with pytest.raises(ValueError, match="split evenly"):
        PairStreamSampler(5, 3, 0, 2)


@pytest.mark.shared_data
def test_evaluation_split_on_the_shared_data(shared_data):
    pairs = find_pairs([shared_data / "TNO", shared_data / "MSRS", shared_data / "RoadScene"])
    kept = select_pairs(pairs, exclude=["TNO/*[02468]", "MSRS/*[0-4][DN]"])
    names = {p.name for p in kept}
    assert not any(n.startswith("TNO/") and int(n[4:]) % 2 == 0 for n in names)
    assert not any(n.startswith("MSRS/") and n[-2] in "01234" for n in names)
    n_tno = sum(p.name.startswith("TNO/") for p in pairs)
    assert sum(n.startswith("TNO/") for n in names) == (n_tno + 1) // 2
    assert sum(n.startswith("RoadScene/") for n in names) == sum(p.name.startswith("RoadScene/") for p in pairs)
