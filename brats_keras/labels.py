"""Every label vocabulary of the project in one place: the classes of each data set and the BraTS regions.

A :class:`ClassSet` lists one scheme's classes (:class:`LabelClass`), each with

* ``code``: the integer stored in the files (a label volume's voxel value, figshare's ``cjdata.label``;
  ``None`` where the files name the class by a folder, as the 4-class image set does);
* ``index``: the class index the models predict (the one-hot channel, the softmax output);
* ``key``: the short name used in ``results.json``, in tables' keys and in metric names, one per class;
* ``title``: the human name for legends, axis labels and the cells a reader sees.

A :class:`Region` is a BraTS evaluation region, a union of BraTS classes. The schemes:

* :data:`BRATS`: BraTS 2017–2021 files and the training classes, code → index 0 → 0 background, 1 → 1 NCR,
  2 → 2 ED, 4 → 3 ET (data.layout, metrics, evaluation, reporting);
* :data:`BRATS_2023`: the same classes, ET stored as 3 (the files hold the class indices);
* :data:`BINARY`: 0 background, 1 tumour (the masks of papers 4 and 5);
* :data:`FIGSHARE`: ``cjdata.label`` 1 meningioma, 2 glioma, 3 pituitary, index = code − 1 (paper 4);
* :data:`BRAIN_MRI`: the folders glioma, meningioma, notumor, pituitary, indexed alphabetically (paper 5);
* :data:`LGG_SLICES`: 0 no tumour, 1 tumour present (whether a slice's mask holds tumour; paper 5);
* :data:`BRATS_REGIONS`: ET ⊂ TC ⊂ WT as training classes and, through a scheme, as file labels.

This module imports nothing of the project (it sits below every other module); the old names
(``reporting.BRATS_CLASS_NAMES``, ``metrics.REGION_CLASSES``, ``evaluation.REGIONS``,
``data.figshare.FIGSHARE_LABELS``, ``data.brain_mri.CLASSES`` …) are derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator

__all__ = [
    "BINARY",
    "BRAIN_MRI",
    "BRATS",
    "BRATS_2023",
    "BRATS_REGIONS",
    "FIGSHARE",
    "LGG_SLICES",
    "REGION_KEYS",
    "ClassSet",
    "LabelClass",
    "Region",
    "region_classes",
    "region_codes",
]


@dataclass(frozen=True)
class LabelClass:
    """One class of a scheme: its file code, model index, key and title (the module docstring)."""

    key: str
    title: str
    index: int
    code: int | None = None
    aliases: tuple[str, ...] = ()
    """Other spellings the files use for this class (folder names of older copies of a data set)."""


@dataclass(frozen=True)
class ClassSet:
    """The classes of one scheme, in index order (``classes[i].index == i``)."""

    name: str
    classes: tuple[LabelClass, ...]
    description: str = ""
    _by_key: dict[str, LabelClass] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if [c.index for c in self.classes] != list(range(len(self.classes))):
            raise ValueError(f"{self.name}: classes must be in index order 0..{len(self.classes) - 1}")
        spellings = [s.lower() for c in self.classes for s in (c.key, *c.aliases)]
        if len(set(spellings)) != len(spellings):
            raise ValueError(f"{self.name}: a key or alias is used twice: {spellings}")
        codes = [c.code for c in self.classes if c.code is not None]
        if len(set(codes)) != len(codes):
            raise ValueError(f"{self.name}: a file code is used twice: {codes}")
        object.__setattr__(self, "_by_key", {c.key: c for c in self.classes})

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[LabelClass]:
        return iter(self.classes)

    def __getitem__(self, index: int) -> LabelClass:
        """The class of model index ``index``."""
        return self.classes[index]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.classes)

    @property
    def titles(self) -> tuple[str, ...]:
        return tuple(c.title for c in self.classes)

    @property
    def codes(self) -> tuple[int, ...]:
        """File codes in index order (classes without a code left out)."""
        return tuple(c.code for c in self.classes if c.code is not None)

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(c.index for c in self.classes)

    def by_key(self, key: str) -> LabelClass:
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"{key!r} is not a class of {self.name} ({', '.join(self.keys)})") from None

    def by_code(self, code: int) -> LabelClass:
        for c in self.classes:
            if c.code is not None and c.code == code:
                return c
        raise KeyError(f"{code!r} is not a file code of {self.name} ({self.codes})")

    def index_by_code(self) -> dict[int, int]:
        """``{file code: model index}``."""
        return {c.code: c.index for c in self.classes if c.code is not None}

    def spellings(self) -> dict[str, str]:
        """``{key or alias: key}``, each class's key first, then its aliases, in index order."""
        return {s: c.key for c in self.classes for s in (c.key, *c.aliases)}

    def resolve(self, name: str) -> str | None:
        """The key a file's name (a key or an alias, any case) stands for, or ``None``."""
        return self.spellings().get(name.lower())

    def per_class(self, **values: Any) -> dict[str, Any]:
        """``{key: value}`` in the order given, checked to name every class of the set exactly once
        (a paper's per-class numbers, written against this vocabulary: ``BRAIN_MRI.per_class(glioma=…, …)``)."""
        if sorted(values) != sorted(self.keys):
            raise ValueError(f"{self.name}: expected one value per class {self.keys}, got {tuple(values)}")
        return dict(values)


@dataclass(frozen=True)
class Region:
    """A BraTS evaluation region: ``classes`` are the model indices of the BraTS classes it unites."""

    key: str
    title: str
    classes: tuple[int, ...]

    def codes(self, scheme: ClassSet | None = None) -> tuple[int, ...]:
        """The region's file codes in ``scheme`` (default :data:`BRATS`, the 2017–2021 labels)."""
        scheme = BRATS if scheme is None else scheme
        return tuple(scheme[i].code for i in self.classes)


# ------------------------------------------------------------------------------------------- BraTS
BRATS = ClassSet("brats", (
    LabelClass("background", "background", index=0, code=0),
    LabelClass("NCR", "necrotic / non-enhancing core", index=1, code=1),
    LabelClass("ED", "edema", index=2, code=2),
    LabelClass("ET", "enhancing tumour", index=3, code=4),
), description="BraTS 2017–2021 label files (0, 1, 2, 4) and the training classes 0..3 (label 4 → class 3)")

BRATS_2023 = ClassSet(
    "brats2023", tuple(replace(c, code=c.index) for c in BRATS),
    description="BraTS 2023 label files: the same classes, enhancing tumour stored as 3 (= the class indices)")


def _region(key: str, title: str, *members: str) -> Region:
    return Region(key, title, tuple(sorted(BRATS.by_key(m).index for m in members)))


BRATS_REGIONS: tuple[Region, ...] = (
    _region("ET", BRATS.by_key("ET").title, "ET"),
    _region("TC", "tumour core", "NCR", "ET"),
    _region("WT", "whole tumour", "NCR", "ED", "ET"),
)
"""The BraTS challenge's nested regions: enhancing tumour ⊂ tumour core ⊂ whole tumour."""

REGION_KEYS: tuple[str, ...] = tuple(r.key for r in BRATS_REGIONS)


def region_classes() -> dict[str, tuple[int, ...]]:
    """``{"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3)}``: each region as training class indices."""
    return {r.key: r.classes for r in BRATS_REGIONS}


def region_codes(scheme: ClassSet | None = None) -> dict[str, tuple[int, ...]]:
    """Each region as file codes of ``scheme``: :data:`BRATS` (default) ``{"ET": (4,), "TC": (1, 4),
    "WT": (1, 2, 4)}``; :data:`BRATS_2023` gives the class indices."""
    return {r.key: r.codes(scheme) for r in BRATS_REGIONS}


# ------------------------------------------------------------------------------------- binary masks
BINARY = ClassSet("binary", (
    LabelClass("background", "background", index=0, code=0),
    LabelClass("tumour", "tumour", index=1, code=1),
), description="a binary tumour mask (papers 4 and 5)")


# ------------------------------------------------------------------------------------ 2D image sets
FIGSHARE = ClassSet("figshare", (
    LabelClass("meningioma", "meningioma", index=0, code=1),
    LabelClass("glioma", "glioma", index=1, code=2),
    LabelClass("pituitary", "pituitary", index=2, code=3),
), description="figshare brain-tumour set (paper 4): cjdata.label 1..3, the tumour type of a slice")

BRAIN_MRI = ClassSet("brain_mri", (
    LabelClass("glioma", "glioma", index=0, aliases=("glioma_tumor",)),
    LabelClass("meningioma", "meningioma", index=1, aliases=("meningioma_tumor",)),
    LabelClass("notumor", "no tumour", index=2, aliases=("no_tumor", "no_tumour")),
    LabelClass("pituitary", "pituitary", index=3, aliases=("pituitary_tumor",)),
), description="the 4-class image set (paper 5): class folders, indexed alphabetically as Keras' "
               "image_dataset_from_directory orders them; older copies spell the folders as the aliases")

LGG_SLICES = ClassSet("lgg_slices", (
    LabelClass("no tumour", "no tumour", index=0, code=0),
    LabelClass("tumour present", "tumour present", index=1, code=1),
), description="paper 5's LGG slices: code 1 when the slice's mask holds a tumour pixel")
