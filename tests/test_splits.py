"""Seeded patient-level splits."""

from __future__ import annotations

import pytest

from brats_keras.data.splits import PAPER1_SPLIT, PAPER2_SPLIT, load_split, save_split, split_cases

IDS = [f"BraTS20_Training_{k:03d}" for k in range(1, 370)]


def test_paper1_split_is_disjoint_complete_and_sized():
    split = split_cases(IDS, **PAPER1_SPLIT, seed=42)
    sets = [set(split[k]) for k in ("train", "val", "test")]
    assert sum(len(s) for s in sets) == len(IDS) and set().union(*sets) == set(IDS)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(split["test"]) == 74 and len(split["val"]) == 44 and len(split["train"]) == 251


def test_paper2_split_75_25():
    split = split_cases(IDS[:344], **PAPER2_SPLIT, seed=0)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (258, 86, 0)


def test_seed_determinism_and_order_independence():
    a = split_cases(IDS, seed=1)
    assert a == split_cases(list(reversed(IDS)), seed=1)
    assert a != split_cases(IDS, seed=2)


def test_tiny_sets_keep_every_split_non_empty_when_asked():
    split = split_cases(IDS[:3], test_fraction=0.2, val_fraction=0.15, seed=0)
    assert [len(split[k]) for k in ("train", "val", "test")] == [1, 1, 1]
    assert split_cases(IDS[:1], seed=0) == {"train": IDS[:1], "val": [], "test": []}


def test_bad_arguments():
    with pytest.raises(ValueError, match="test_fraction"):
        split_cases(IDS, test_fraction=1.0)
    with pytest.raises(ValueError, match="duplicates"):
        split_cases(IDS[:2] * 2)


def test_save_and_load_round_trip(tmp_path):
    split = split_cases(IDS[:20], seed=0)
    save_split(tmp_path / "split.json", split, seed=0, unit="patient")
    assert load_split(tmp_path / "split.json") == split
    assert '"seed": 0' in (tmp_path / "split.json").read_text()


def test_stratified_split_puts_every_group_in_every_part():
    # figshare-like: 82 meningioma, 89 glioma, 62 pituitary patients
    groups = {f"m{i}": "meningioma" for i in range(82)}
    groups.update({f"g{i}": "glioma" for i in range(89)})
    groups.update({f"p{i}": "pituitary" for i in range(62)})
    ids = sorted(groups)
    split = split_cases(ids, test_fraction=0.2, val_fraction=0.15, seed=3, strata=groups)
    sets = [set(split[k]) for k in ("train", "val", "test")]
    assert set().union(*sets) == set(ids) and sum(map(len, sets)) == len(ids)
    for part in split.values():
        assert {groups[i] for i in part} == {"meningioma", "glioma", "pituitary"}
    test = [groups[i] for i in split["test"]]
    assert (test.count("meningioma"), test.count("glioma"), test.count("pituitary")) == (16, 18, 12)
    assert split == split_cases(list(reversed(ids)), test_fraction=0.2, val_fraction=0.15, seed=3, strata=groups)
    # an unstratified split of 8 + 8 + 8 patients can leave a type out of the 5 test patients; stratified never
    small = {f"{t}{i}": t for t in "mgp" for i in range(8)}
    for seed in range(20):
        parts = split_cases(sorted(small), seed=seed, strata=small)
        assert {small[i] for i in parts["test"]} == set("mgp") and {small[i] for i in parts["val"]} == set("mgp")
    with pytest.raises(ValueError, match="strata: no group"):
        split_cases(["a", "b"], strata={"a": "x"})
