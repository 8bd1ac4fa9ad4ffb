"""The figshare brain-tumour set (Cheng et al., figshare 1512427; paper 4): reader, writer, SYNTHETIC
stand-in and a prepared-array index.

The real release: 3064 T1-weighted contrast-enhanced (T1ce) slices of 233 patients, one MATLAB v7.3
``.mat`` file per slice (``1.mat`` … ``3064.mat``, shipped in four folders
``brainTumorDataPublic_1-766`` … ``_2299-3064``, beside ``cvind.mat`` — cross-validation indices, not
a slice — and a README). A v7.3 MAT-file is an HDF5 file behind a 512-byte MATLAB header; each slice
file holds the struct ``cjdata``:

- ``label``: float64 (1, 1), ``MATLAB_class`` double → :attr:`FigshareSlice.label` int, 1 meningioma,
  2 glioma, 3 pituitary;
- ``PID``: uint16 (n, 1) character codes, char → ``pid`` str, e.g. ``"100360"``;
- ``image``: int16 (W, H), the transpose → ``image`` int16 (H, W), 512² (a few 256²);
- ``tumorBorder``: float64 (1, 2k) holding x1, y1, x2, y2, … → ``border`` float64 (k, 2), one (x, y) per row;
- ``tumorMask``: uint8 (W, H), logical → ``mask`` uint8 (H, W) in {0, 1}.

MATLAB stores arrays column-major, so h5py sees every 2D array transposed; the reader transposes back,
so ``image[row, column]`` is what MATLAB's ``imshow(cjdata.image)`` shows at that row and column.

Everything made by :func:`synthesize_figshare_patient` / :func:`write_figshare_dataset` is SYNTHETIC:
numbers measured on it say whether a pipeline works, never how a method performs on patients.

Modules, one job each (every public name is re-exported here):

- :mod:`~brats_keras.data.figshare.reader`: records, the v7.3 reader, discovery, patient ids and the
  patient-level split;
- :mod:`~brats_keras.data.figshare.writer`: the v7.3 writer and the SYNTHETIC data-set writer / cache;
- :mod:`~brats_keras.data.figshare.generator`: the SYNTHETIC slice generator;
- :mod:`~brats_keras.data.figshare.cache`: normalise + resize, :class:`FigshareCache`, :class:`FigshareIndex`.
"""

from brats_keras.data.figshare.cache import (
    CACHE_FORMAT_VERSION,
    NORMALIZATIONS,
    FigshareArrays,
    FigshareCache,
    FigshareIndex,
    FigshareSettings,
    normalize_image,
    prepare_figshare_slice,
    resize_mask,
    resize_square,
)
from brats_keras.data.figshare.generator import mask_border, synthesize_figshare_patient, synthesize_tumour_free_slices
from brats_keras.data.figshare.reader import (
    FIGSHARE_FIELDS,
    FIGSHARE_LABELS,
    MAT73_USERBLOCK,
    MIN_SIZE,
    FigshareMeta,
    FigshareSlice,
    discover_figshare,
    patient_ids,
    patient_tumour_types,
    read_figshare_mat,
    read_figshare_meta,
    read_figshare_metas,
    read_patient_ids,
    split_by_patient,
)
from brats_keras.data.figshare.writer import (
    ensure_synthetic_figshare,
    mat73_header,
    synthetic_pid,
    write_figshare_dataset,
    write_figshare_mat,
)

__all__ = [
    "CACHE_FORMAT_VERSION",
    "FIGSHARE_FIELDS",
    "FIGSHARE_LABELS",
    "MAT73_USERBLOCK",
    "MIN_SIZE",
    "NORMALIZATIONS",
    "FigshareArrays",
    "FigshareCache",
    "FigshareIndex",
    "FigshareMeta",
    "FigshareSettings",
    "FigshareSlice",
    "discover_figshare",
    "ensure_synthetic_figshare",
    "mask_border",
    "mat73_header",
    "normalize_image",
    "patient_ids",
    "patient_tumour_types",
    "prepare_figshare_slice",
    "read_figshare_mat",
    "read_figshare_meta",
    "read_figshare_metas",
    "read_patient_ids",
    "resize_mask",
    "resize_square",
    "split_by_patient",
    "synthesize_figshare_patient",
    "synthesize_tumour_free_slices",
    "synthetic_pid",
    "write_figshare_dataset",
    "write_figshare_mat",
]
