"""Data sources (BraTS NIfTI readers, synthetic data) and input pipelines (tf.data, PyDataset)."""

from brats_keras.data.brats import Case, CaseFiles, case_files, discover_cases, load_case, read_image, read_label
from brats_keras.data.layout import BRATS2020, BRATS2021, BRATS_LABELS, MODALITIES, NUM_CLASSES
from brats_keras.data.slices2d import SliceCache, SliceIndex, SliceSettings
from brats_keras.data.splits import load_split, save_split, split_cases
from brats_keras.data.volumes3d import Preprocess3DSettings, VolumeIndex, preprocess_dataset_3d

__all__ = [
    "BRATS2020",
    "BRATS2021",
    "BRATS_LABELS",
    "MODALITIES",
    "NUM_CLASSES",
    "Case",
    "CaseFiles",
    "Preprocess3DSettings",
    "SliceCache",
    "SliceIndex",
    "SliceSettings",
    "VolumeIndex",
    "case_files",
    "discover_cases",
    "load_case",
    "load_split",
    "preprocess_dataset_3d",
    "read_image",
    "read_label",
    "save_split",
    "split_cases",
]
