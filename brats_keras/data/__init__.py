"""Data sources (BraTS NIfTI readers, figshare .mat slices, synthetic data) and input pipelines (tf.data,
PyDataset). The figshare set's full API is :mod:`brats_keras.data.figshare`."""

from brats_keras.data.brats import Case, CaseFiles, case_files, discover_cases, load_case, read_image, read_label
from brats_keras.data.figshare import FIGSHARE_LABELS, FigshareCache, FigshareIndex, discover_figshare, read_figshare_mat
from brats_keras.data.layout import BRATS2020, BRATS2021, BRATS_LABELS, MODALITIES, NUM_CLASSES
from brats_keras.data.slices2d import SliceCache, SliceIndex, SliceSettings
from brats_keras.data.splits import load_split, save_split, split_cases
from brats_keras.data.volumes3d import Preprocess3DSettings, VolumeIndex, preprocess_dataset_3d

__all__ = [
    "BRATS2020",
    "BRATS2021",
    "BRATS_LABELS",
    "FIGSHARE_LABELS",
    "MODALITIES",
    "NUM_CLASSES",
    "Case",
    "CaseFiles",
    "FigshareCache",
    "FigshareIndex",
    "Preprocess3DSettings",
    "SliceCache",
    "SliceIndex",
    "SliceSettings",
    "VolumeIndex",
    "case_files",
    "discover_cases",
    "discover_figshare",
    "load_case",
    "load_split",
    "preprocess_dataset_3d",
    "read_figshare_mat",
    "read_image",
    "read_label",
    "save_split",
    "split_cases",
]
