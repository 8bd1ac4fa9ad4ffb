"""Reports of a run: the paper's tables with measured values beside them, and the run's figures.

Imported only by the experiment runner and the scripts (nothing in data, models, training or
evaluation imports it). NumPy + matplotlib (no TensorFlow, no Keras), so reports can be rebuilt from
a run folder's ``history.csv`` and saved predictions on any machine. Split by job:

- :mod:`~brats_keras.reporting.tables`: Markdown — :class:`Column`, :func:`epoch_table` (paper 1's
  Tables 6.1 / 6.2), :func:`comparison_table` (paper 2's Tables III / IV, paper 4's Table 3),
  :func:`classification_report_markdown` (paper 5), :func:`history_to_epoch_dict`,
  :func:`write_markdown`, :data:`SYNTHETIC_WARNING`;
- :mod:`~brats_keras.reporting.figures`: :func:`plot_training_curves`, :func:`plot_curve_panels`
  (paper 3's Fig. 5.1), :func:`plot_lr_schedule`, :func:`plot_bias_correction`,
  :func:`plot_confusion_matrix`, :func:`plot_captioned_images`;
- :mod:`~brats_keras.reporting.overlays`: :func:`plot_prediction_overlay` (paper 1's Fig. 6.1),
  :func:`plot_image_grid`, :func:`plot_volume_overlay` (paper 2) with :func:`overlay_center` and
  :func:`orthogonal_planes`;
- :mod:`~brats_keras.reporting.correction`: :func:`save_correction_figure` (paper 3's pre-processing
  on one case).

The numbers these render live elsewhere and are re-exported here for the callers of the old
module: :func:`confusion_matrix` and :func:`classification_report` (:mod:`brats_keras.evaluation`),
:func:`read_history_csv` and :func:`write_history_csv` (:mod:`brats_keras.io`).
"""

from brats_keras.evaluation.classification import classification_report, confusion_matrix
from brats_keras.io import read_history_csv, write_history_csv
from brats_keras.reporting.correction import save_correction_figure
from brats_keras.reporting.figures import (
    DEFAULT_DPI,
    plot_bias_correction,
    plot_captioned_images,
    plot_confusion_matrix,
    plot_curve_panels,
    plot_lr_schedule,
    plot_training_curves,
)
from brats_keras.reporting.overlays import (
    BINARY_CLASS_NAMES,
    BINARY_COLOR,
    BRATS_CLASS_COLORS,
    BRATS_CLASS_NAMES,
    VOLUME_PLANES,
    orthogonal_planes,
    overlay_center,
    plot_image_grid,
    plot_prediction_overlay,
    plot_volume_overlay,
)
from brats_keras.reporting.tables import (
    NOT_IN_PAPER,
    NOT_MEASURED,
    NOT_RUN,
    SYNTHETIC_WARNING,
    Column,
    classification_report_markdown,
    comparison_table,
    epoch_table,
    history_to_epoch_dict,
    write_markdown,
)

__all__ = [
    "BINARY_CLASS_NAMES",
    "BINARY_COLOR",
    "BRATS_CLASS_COLORS",
    "BRATS_CLASS_NAMES",
    "DEFAULT_DPI",
    "NOT_IN_PAPER",
    "NOT_MEASURED",
    "NOT_RUN",
    "SYNTHETIC_WARNING",
    "VOLUME_PLANES",
    "Column",
    "classification_report",
    "classification_report_markdown",
    "comparison_table",
    "confusion_matrix",
    "epoch_table",
    "history_to_epoch_dict",
    "orthogonal_planes",
    "overlay_center",
    "plot_bias_correction",
    "plot_captioned_images",
    "plot_confusion_matrix",
    "plot_curve_panels",
    "plot_image_grid",
    "plot_lr_schedule",
    "plot_prediction_overlay",
    "plot_training_curves",
    "plot_volume_overlay",
    "read_history_csv",
    "save_correction_figure",
    "write_history_csv",
    "write_markdown",
]
