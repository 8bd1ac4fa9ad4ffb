"""File-naming conventions of the public BraTS training releases.

BraTS 2020 (369 cases)::

    <root>/BraTS20_Training_001/BraTS20_Training_001_{flair,t1,t1ce,t2,seg}.nii.gz
    <root>/name_mapping.csv
    (case 355's label is misnamed ``W39_1998.09.19_Segm.nii`` in the public copy)

BraTS 2021 (1251 cases)::

    <root>/BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz

Volumes are 240×240×155 at 1 mm; labels {0, 1 = necrotic / non-enhancing core, 2 = edema,
4 = enhancing}. Both plain ``.nii`` and ``.nii.gz`` occur.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from brats_keras.labels import BRATS

MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
"""Image modalities in the order the synthesizer writes them (any order can be requested)."""

LABEL_KEY = "seg"
BRATS_LABELS: tuple[int, ...] = BRATS.codes
"""Label values of BraTS 2017–2021, (0, 1, 2, 4): background, necrotic/non-enhancing core, edema,
enhancing (:data:`brats_keras.labels.BRATS`)."""

NUM_CLASSES = len(BRATS)
"""Training classes {0, 1, 2, 3}: BraTS label 4 (enhancing) becomes class 3."""

BRATS_SHAPE: tuple[int, int, int] = (240, 240, 155)
BRATS_SPACING: tuple[float, float, float] = (1.0, 1.0, 1.0)
BRATS_AFFINE = np.array(
    [[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
"""The affine the public BraTS 2020/2021 NIfTI files carry (SRI24 grid, 1 mm, LPS-flipped x/y)."""

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")

MISNAMED_LABELS: dict[str, str] = {"BraTS20_Training_355": "W39_1998.09.19_Segm.nii"}
"""Label files of the public releases that do not follow the naming pattern."""


@dataclass(frozen=True)
class DatasetLayout:
    """Naming scheme of one BraTS release."""

    name: str
    case_regex: str
    id_width: int
    prefix: str

    def case_id(self, number: int) -> str:
        return f"{self.prefix}{number:0{self.id_width}d}"

    def matches(self, folder_name: str) -> bool:
        return re.fullmatch(self.case_regex, folder_name) is not None


BRATS2020 = DatasetLayout("brats2020", r"BraTS20_Training_\d{3}", 3, "BraTS20_Training_")
BRATS2021 = DatasetLayout("brats2021", r"BraTS2021_\d{5}", 5, "BraTS2021_")
LAYOUTS: dict[str, DatasetLayout] = {BRATS2020.name: BRATS2020, BRATS2021.name: BRATS2021}


_ET = BRATS.by_key("ET")  # the one class whose file label (4) is not its class index (3)


def to_class_indices(labels: np.ndarray) -> np.ndarray:
    """Map BraTS labels {0,1,2,4} to training classes {0,1,2,3} (uint8)."""
    out = np.asarray(labels).astype(np.uint8, copy=True)
    out[out == _ET.code] = _ET.index
    return out
