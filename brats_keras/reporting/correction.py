"""The figure of paper 3's pre-processing on one case: raw slice, N4 bias field, corrected slice
(``data_prep/correct_bias.py --figure``). The correction itself is :mod:`brats_keras.data.correction`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brats_keras.data.brats import CaseFiles, load_case
from brats_keras.data.correction import CorrectionSettings, brain_box, brain_mask, correct_volume, n4_correct
from brats_keras.reporting.figures import plot_bias_correction


def save_correction_figure(files: CaseFiles, out_png: str | Path, settings: CorrectionSettings = CorrectionSettings(),
                           *, modality: str = "t1", synthetic: bool = False) -> Path:
    """A before / after PNG of one case's ``modality``: the axial slice with the most brain, raw, the
    N4 field fitted inside the brain mask, and the fully corrected result (what :func:`correct_case`
    writes)."""
    if modality not in settings.modalities:
        raise ValueError(f"modality: {modality!r} not in the corrected modalities {list(settings.modalities)}")
    case = load_case(files, settings.modalities, with_label=False)
    mask = brain_mask(case.image)
    volume = case.image[..., settings.modalities.index(modality)]
    box = brain_box(mask)
    _, field_box = n4_correct(volume[box], mask[box], case.spacing, settings=settings)
    field = np.ones(volume.shape, np.float32)
    field[box] = field_box
    corrected = correct_volume(volume, mask, case.spacing, settings=settings)
    k = int(np.argmax(mask.sum(axis=(0, 1))))
    return plot_bias_correction(np.rot90(volume[:, :, k]), np.rot90(field[:, :, k]), np.rot90(corrected[:, :, k]),
                                out_png, synthetic=synthetic,
                                title=f"{files.case_id} {modality.upper()}, axial slice {k}: N4 bias-field correction")
