"""Every metric computed outside the graph, in NumPy (and SciPy), split by job:

- :mod:`~brats_keras.evaluation.volumes`: whole label volumes — BraTS regions, Dice, HD95,
  sensitivity, specificity, :func:`evaluate_case` and :func:`aggregate` over cases;
- :mod:`~brats_keras.evaluation.binary`: one binary segmentation's pixel counts and paper 4's six
  scores (:func:`overlap_counts`, :func:`scores_from_counts`, :func:`segmentation_scores`);
- :mod:`~brats_keras.evaluation.classification`: :func:`confusion_matrix` and
  :func:`classification_report` (paper 5's classifier).

Every public name is re-exported here, so ``from brats_keras.evaluation import X`` works for each.
"""

from brats_keras.evaluation.binary import overlap_counts, scores_from_counts, segmentation_scores
from brats_keras.evaluation.classification import class_indices, classification_report, confusion_matrix
from brats_keras.evaluation.volumes import (
    HD95_EMPTY,
    LABEL_SETS,
    METRICS,
    REGIONS,
    SUMMARY_STATS,
    aggregate,
    dice,
    evaluate_case,
    hd95,
    region_labels,
    region_masks,
    sensitivity,
    specificity,
)
from brats_keras.errors import DataError  # noqa: F401  (the error the checks raise, as before the split)

__all__ = [
    "HD95_EMPTY",
    "LABEL_SETS",
    "METRICS",
    "REGIONS",
    "SUMMARY_STATS",
    "aggregate",
    "class_indices",
    "classification_report",
    "confusion_matrix",
    "dice",
    "evaluate_case",
    "hd95",
    "overlap_counts",
    "region_labels",
    "region_masks",
    "scores_from_counts",
    "segmentation_scores",
    "sensitivity",
    "specificity",
]
