"""Seeded, patient-level train / validation / test splits, saved as JSON in the run folder.

Splits are always by patient (case id), never by slice: slices of one patient are strongly
correlated, and a slice-level split leaks the test patients into training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from brats_keras.io import atomic_write_json

SPLIT_NAMES = ("train", "val", "test")

PAPER1_SPLIT = {"test_fraction": 0.20, "val_fraction": 0.15}
"""Paper 1: 80 % train+val / 20 % test by patient, 15 % of train+val for validation."""
PAPER2_SPLIT = {"test_fraction": 0.0, "val_fraction": 0.25}
"""Paper 2: 75:25 train/validation of the kept BraTS 2020 cases; the test cohort is BraTS 2021."""


def split_cases(
    case_ids: Sequence[str], *, test_fraction: float = 0.2, val_fraction: float = 0.15, seed: int = 0,
    strata: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Split patients into ``train`` / ``val`` / ``test``.

    ``test_fraction`` of all patients go to test; ``val_fraction`` of the remaining ones to
    validation (paper 1: 0.2 and 0.15; paper 2: 0.0 and 0.25). Counts are rounded; a non-zero
    fraction always yields at least one patient when there are enough, and training always keeps at
    least one. The result depends only on the set of ids and the seed, not on their order.

    ``strata`` (``{case id: group}``, e.g. the tumour type of each figshare patient) splits every
    group on its own with the same fractions and seed and joins the parts, so each group is
    represented in every part it is large enough for (a stratified patient split).
    """
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise ValueError("case_ids contains duplicates")
    if strata is not None:
        missing = [i for i in ids if i not in strata]
        if missing:
            raise ValueError(f"strata: no group for {len(missing)} case(s), e.g. {missing[0]!r}")
        groups: dict[str, list[str]] = {}
        for i in ids:
            groups.setdefault(str(strata[i]), []).append(i)
        parts = [split_cases(members, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
                 for _, members in sorted(groups.items())]
        return {name: sorted(i for part in parts for i in part[name]) for name in SPLIT_NAMES}
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]

    def count(n: int, fraction: float) -> int:
        k = int(round(n * fraction))
        if fraction > 0 and k == 0 and n >= 2:
            k = 1
        return min(k, n - 1) if n >= 1 else 0

    n_test = count(len(shuffled), test_fraction)
    test, rest = shuffled[:n_test], shuffled[n_test:]
    n_val = count(len(rest), val_fraction)
    val, train = rest[:n_val], rest[n_val:]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def save_split(path: str | Path, split: dict[str, list[str]], **meta) -> None:
    """Write the split (and e.g. the seed and fractions that produced it) atomically as JSON."""
    atomic_write_json(path, {**meta, **{k: list(split.get(k, [])) for k in SPLIT_NAMES}})


def load_split(path: str | Path) -> dict[str, list[str]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {k: list(data.get(k, [])) for k in SPLIT_NAMES}
