"""Approximate-time pairing and the real-time policy (one-slot handoff, max_age, clock jumps)."""

import threading

import pytest

from diffmf_ros.sync import ApproximateTimePairer, ClockJumpDetector, LatestSlot, Pair, is_stale

MS = 1_000_000


def test_frames_within_slop_pair_and_carry_the_reference_stamp():
    pairer = ApproximateTimePairer(slop=0.010, queue_size=3, reference="visible")
    assert pairer.push("thermal", 100 * MS, "ir0") == []
    (pair,) = pairer.push("visible", 108 * MS, "vi0")
    assert pair == Pair(ir="ir0", vi="vi0", ir_stamp_ns=100 * MS, vi_stamp_ns=108 * MS, stamp_ns=108 * MS)
    assert pair.skew_ns == 8 * MS
    assert pairer.queue_lengths() == {"thermal": 0, "visible": 0}

    thermal_ref = ApproximateTimePairer(slop=0.010, queue_size=3, reference="thermal")
    thermal_ref.push("visible", 200 * MS, "vi")
    (pair,) = thermal_ref.push("thermal", 195 * MS, "ir")
    assert pair.stamp_ns == 195 * MS


def test_slop_is_inclusive_and_frames_beyond_it_wait():
    pairer = ApproximateTimePairer(slop=0.010, queue_size=3)
    pairer.push("thermal", 0, "a")
    assert pairer.push("visible", 11 * MS, "b") == []
    (pair,) = pairer.push("thermal", 21 * MS, "c")  # exactly 10 ms from b
    assert (pair.ir, pair.vi) == ("c", "b")
    assert pairer.drops["unpaired"] == 1  # "a" was overtaken by the newer thermal pair


def test_the_closest_partner_wins():
    pairer = ApproximateTimePairer(slop=0.050, queue_size=5)
    for stamp, name in ((0, "v0"), (30 * MS, "v30"), (60 * MS, "v60")):
        pairer.push("visible", stamp, name)
    (pair,) = pairer.push("thermal", 35 * MS, "t35")
    assert pair.vi == "v30"
    # v0 is older than the pair, so it can never be used in time order: dropped, counted.
    assert pairer.drops["unpaired"] == 1
    assert pairer.queue_lengths() == {"thermal": 0, "visible": 1}


def test_queue_size_bounds_each_stream_and_counts_evictions():
    pairer = ApproximateTimePairer(slop=0.001, queue_size=4)
    for i in range(10):
        pairer.push("thermal", i * 100 * MS, i)
        assert pairer.queue_lengths()["thermal"] <= 4
    assert pairer.drops["unpaired"] == 6
    (pair,) = pairer.push("visible", 900 * MS, "v")
    assert pair.ir == 9


def test_pairs_come_out_in_time_order():
    pairer = ApproximateTimePairer(slop=0.010, queue_size=5)
    pairer.push("thermal", 100 * MS, "t100")
    pairer.push("visible", 101 * MS, "v101")
    assert pairer.push("thermal", 50 * MS, "late") == []
    assert pairer.drops["out_of_order"] == 1


def test_duplicate_stamps_keep_the_newer_frame():
    pairer = ApproximateTimePairer(slop=0.0, queue_size=5)
    pairer.push("thermal", 5 * MS, "old")
    pairer.push("thermal", 5 * MS, "new")
    (pair,) = pairer.push("visible", 5 * MS, "v")
    assert pair.ir == "new" and pairer.drops["duplicate_stamp"] == 1


def test_reset_forgets_queues_and_time_order():
    pairer = ApproximateTimePairer(slop=0.010, queue_size=5)
    pairer.push("thermal", 10_000 * MS, "t")
    pairer.push("visible", 10_000 * MS, "v")
    pairer.push("thermal", 10_500 * MS, "waiting")
    assert pairer.reset("clock_jump") == 1
    assert pairer.drops["clock_jump"] == 1
    pairer.push("thermal", 0, "t-loop")  # the bag started again
    (pair,) = pairer.push("visible", 1 * MS, "v-loop")
    assert pair.stamp_ns == 1 * MS


def test_finish_counts_leftovers_as_unpaired():
    pairer = ApproximateTimePairer(slop=0.010, queue_size=5)
    pairer.push("thermal", 0, "a")
    pairer.push("visible", 1 * MS, "b")
    pairer.push("visible", 500 * MS, "c")
    assert pairer.finish() == 1
    assert pairer.drops == {"unpaired": 1}
    assert pairer.pairs_made == 1


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(slop=-1, queue_size=1), "slop must be >= 0"),
        (dict(slop=0.1, queue_size=0), "queue_size must be >= 1"),
        (dict(slop=0.1, queue_size=1, reference="depth"), "reference must be one of"),
    ],
)
def test_bad_settings_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ApproximateTimePairer(**kwargs)


def test_unknown_stream_is_refused():
    with pytest.raises(ValueError, match="stream must be one of"):
        ApproximateTimePairer(0.1, 1).push("lidar", 0, None)


def test_latest_slot_hands_over_only_the_newest_item():
    slot = LatestSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1  # displaced: the caller counts it as a drop
    assert len(slot) == 1
    assert slot.take(timeout=0) == 2
    assert slot.take(timeout=0) is None and len(slot) == 0


def test_latest_slot_wakes_a_waiting_worker_and_closes():
    slot = LatestSlot()
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(timeout=30)))
    worker.start()
    slot.put("pair")
    worker.join(timeout=30)
    assert got == ["pair"]

    closer = threading.Thread(target=lambda: got.append(slot.take(timeout=30)))
    closer.start()
    slot.close()
    closer.join(timeout=30)
    assert got == ["pair", None] and not closer.is_alive()


def test_max_age_check():
    assert is_stale(0, 600 * MS, max_age=0.5)
    assert not is_stale(0, 400 * MS, max_age=0.5)
    assert not is_stale(0, 10**12, max_age=0)  # disabled
    assert not is_stale(900 * MS, 0, max_age=0.5)  # ahead of a lagging sim clock


def test_clock_jump_detector():
    clock = ClockJumpDetector(tolerance=0.1)
    assert not clock.update(10_000 * MS)
    assert not clock.update(9_950 * MS)  # jitter within tolerance
    assert not clock.update(10_050 * MS)
    assert clock.update(1_000 * MS)  # the bag looped
    assert not clock.update(1_100 * MS)
    assert clock.jumps == 1
