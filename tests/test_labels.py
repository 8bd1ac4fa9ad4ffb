"""brats_keras.labels: the one vocabulary of classes and regions, and the old names derived from it."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from brats_keras import labels as L

PACKAGE = Path(__file__).resolve().parents[1] / "brats_keras"


# ----------------------------------------------------------------------------------------- the schemes
def test_brats_classes_map_file_labels_to_training_classes():
    assert L.BRATS.codes == (0, 1, 2, 4) and L.BRATS.indices == (0, 1, 2, 3)
    assert L.BRATS.keys == ("background", "NCR", "ED", "ET")
    assert L.BRATS.index_by_code() == {0: 0, 1: 1, 2: 2, 4: 3}
    assert L.BRATS.by_code(4) is L.BRATS.by_key("ET") is L.BRATS[3]
    # BraTS 2023: the same classes (keys, titles), enhancing tumour stored as 3 = the class indices
    assert L.BRATS_2023.keys == L.BRATS.keys and L.BRATS_2023.titles == L.BRATS.titles
    assert L.BRATS_2023.codes == (0, 1, 2, 3) == L.BRATS_2023.indices
    with pytest.raises(KeyError, match="not a file code"):
        L.BRATS.by_code(3)


def test_brats_regions_are_nested_and_agree_between_labels_and_classes():
    assert L.REGION_KEYS == ("ET", "TC", "WT")
    classes, labels = L.region_classes(), L.region_codes()
    assert classes == {"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3)}
    assert labels == {"ET": (4,), "TC": (1, 4), "WT": (1, 2, 4)}
    assert L.region_codes(L.BRATS_2023) == classes
    assert set(classes["ET"]) < set(classes["TC"]) < set(classes["WT"])
    assert set(labels["ET"]) < set(labels["TC"]) < set(labels["WT"])
    to_class = L.BRATS.index_by_code()
    for key in L.REGION_KEYS:  # label 4 ↔ class 3, and every other label is its own class
        assert tuple(to_class[code] for code in labels[key]) == classes[key]
    assert 0 not in classes["WT"] and len(classes["WT"]) == len(L.BRATS) - 1  # WT: every tumour class
    assert [r.title for r in L.BRATS_REGIONS] == ["enhancing tumour", "tumour core", "whole tumour"]


def test_image_set_vocabularies():
    assert L.FIGSHARE.codes == (1, 2, 3) and L.FIGSHARE.keys == ("meningioma", "glioma", "pituitary")
    assert L.BRAIN_MRI.keys == tuple(sorted(L.BRAIN_MRI.keys))  # index order = alphabetical folder order
    assert set(L.FIGSHARE.keys) < set(L.BRAIN_MRI.keys)  # one key per tumour type across both sets
    assert L.BRAIN_MRI.by_key("notumor").title == "no tumour"
    assert L.LGG_SLICES.keys == ("no tumour", "tumour present") and L.BINARY.keys == ("background", "tumour")


def test_aliases_resolve_to_the_canonical_keys():
    for alias, key in (("glioma_tumor", "glioma"), ("MENINGIOMA_TUMOR", "meningioma"), ("no_tumor", "notumor"),
                       ("No_Tumour", "notumor"), ("pituitary_tumor", "pituitary"), ("notumor", "notumor")):
        assert L.BRAIN_MRI.resolve(alias) == key
    assert L.BRAIN_MRI.resolve("gliomas") is None


def test_class_sets_refuse_inconsistent_definitions():
    a, b = L.LabelClass("a", "A", index=0, code=1), L.LabelClass("b", "B", index=1, code=1)
    with pytest.raises(ValueError, match="file code"):
        L.ClassSet("x", (a, b))
    with pytest.raises(ValueError, match="index order"):
        L.ClassSet("x", (L.LabelClass("a", "A", index=1),))
    with pytest.raises(ValueError, match="twice"):
        L.ClassSet("x", (L.LabelClass("a", "A", index=0, aliases=("B",)), L.LabelClass("b", "B", index=1)))
    assert L.BRAIN_MRI.per_class(pituitary=1, glioma=2, notumor=3, meningioma=4) == {
        "pituitary": 1, "glioma": 2, "notumor": 3, "meningioma": 4}
    with pytest.raises(ValueError, match="one value per class"):
        L.BRAIN_MRI.per_class(glioma=1, meningioma=2, notumor=3, pituitry=4)


# ---------------------------------------------------------------------- the old names, from labels.py
def test_reporting_legend_names_derive_from_labels():
    from brats_keras.reporting import overlays

    assert overlays.BRATS_CLASS_NAMES == ("background", "necrotic / non-enhancing core (NCR, 1)", "edema (ED, 2)",
                                          "enhancing tumour (ET, 3 = label 4)")
    assert [n.split(" (")[0] for n in overlays.BRATS_CLASS_NAMES] == list(L.BRATS.titles)
    assert overlays.BINARY_CLASS_NAMES == L.BINARY.titles == ("background", "tumour")


def test_metrics_evaluation_and_layout_derive_from_labels():
    from brats_keras import metrics
    from brats_keras.configs.paper3 import TUMOUR_CLASSES
    from brats_keras.data import layout
    from brats_keras.evaluation import volumes
    from brats_keras.inference import to_brats_labels

    assert metrics.REGION_CLASSES == L.region_classes() == {"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3)}
    assert volumes.REGIONS == L.region_codes() == {"ET": (4,), "TC": (1, 4), "WT": (1, 2, 4)}
    assert volumes.LABEL_SETS == {"brats": (0, 1, 2, 4), "classes": (0, 1, 2, 3)}
    assert volumes.region_labels("classes") == metrics.REGION_CLASSES
    assert layout.BRATS_LABELS == L.BRATS.codes and layout.NUM_CLASSES == len(L.BRATS) == 4
    assert TUMOUR_CLASSES == [1, 2, 3]
    files = np.array([0, 1, 2, 4, 4, 0], np.uint8)
    assert layout.to_class_indices(files).tolist() == [0, 1, 2, 3, 3, 0]
    assert to_brats_labels(layout.to_class_indices(files)).tolist() == files.tolist()


def test_figshare_and_brain_mri_names_derive_from_labels():
    from brats_keras.configs.paper5 import PAPER_REPORT, PAPER_TABLE1
    from brats_keras.data import brain_mri
    from brats_keras.data.figshare import FIGSHARE_LABELS

    assert FIGSHARE_LABELS == {c.code: c.key for c in L.FIGSHARE} == {1: "meningioma", 2: "glioma", 3: "pituitary"}
    assert brain_mri.CLASSES == L.BRAIN_MRI.keys == ("glioma", "meningioma", "notumor", "pituitary")
    assert brain_mri.CLASS_TITLES == {"glioma": "glioma", "meningioma": "meningioma", "notumor": "no tumour",
                                      "pituitary": "pituitary"}
    assert set(brain_mri.FOLDER_ALIASES.values()) == set(brain_mri.CLASSES)
    assert {brain_mri.FOLDER_ALIASES[k] for k in ("glioma_tumor", "meningioma_tumor", "no_tumor", "no_tumour",
                                                  "pituitary_tumor")} == set(brain_mri.CLASSES)
    assert list(PAPER_REPORT) == ["meningioma", "glioma", "pituitary", "notumor", "accuracy"]
    assert list(PAPER_TABLE1["classify"]) == ["meningioma", "glioma", "pituitary", "notumor"]
    assert list(PAPER_TABLE1["segment"]) == ["tumour present", "no tumour"] == list(L.LGG_SLICES.keys[::-1])


# ------------------------------------------------------------------------- no name lists elsewhere
GENERIC = {"background", "tumour"}
"""Keys too common to police: also the names of other things (a subset of slices, a pseudo-region)."""

SYNTHESIZER_TISSUES = {
    # The SYNTHETIC generators' intensity tables and random fields are keyed by tissue ("edema", a
    # meningioma's signal), not by class: they decide how a voxel looks, never how a class is named.
    "data/synthetic.py": {"edema", "enhancing", "non_enhancing"},
    "data/figshare/generator.py": {"edema", "meningioma", "pituitary"},
}


def _vocabulary() -> set[str]:
    names = set()
    for scheme in (L.BRATS, L.BRATS_2023, L.BINARY, L.FIGSHARE, L.BRAIN_MRI, L.LGG_SLICES):
        for c in scheme:
            names.update(s.lower() for s in (c.key, c.title, *c.aliases) if len(s) > 3)
    names.update(r.title.lower() for r in L.BRATS_REGIONS)
    names.update(w for c in L.BRATS for w in c.title.lower().split() if len(w) > 6)  # "necrotic", "enhancing"
    return names - GENERIC


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (of a module, class or function, or the
    attribute docstring right after an assignment)."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for stmt in body:
            value = stmt.value if isinstance(stmt, ast.Expr) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.add(id(value))
    return found


def name_literals(source: str, vocabulary: set[str]) -> list[tuple[int, str]]:
    """``(line, string)`` of every non-docstring string constant of ``source`` (f-string parts
    included) that contains a name of ``vocabulary``, whole-word, any case."""
    import re

    pattern = re.compile(r"(?<![a-z])(" + "|".join(re.escape(n) for n in sorted(vocabulary, key=len, reverse=True))
                         + r")(?![a-z])", re.IGNORECASE)
    tree = ast.parse(source)
    docs = _docstrings(tree)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
            and pattern.search(node.value)]


def test_the_literal_scan_finds_what_it_looks_for():
    source = ('"""meningioma in a docstring"""\n'
              'X = ("glioma", "a necrotic / non-enhancing core")\n'
              '"""attribute docstring: notumor"""\n'
              'def f(v):\n    """pituitary"""\n    return f"{v} no tumour", "gliomas", "edematous"\n')
    assert name_literals(source, _vocabulary()) == [(2, "glioma"), (2, "a necrotic / non-enhancing core"),
                                                   (6, " no tumour")]


def test_no_class_name_literals_outside_labels():
    vocabulary = _vocabulary()
    assert {"meningioma", "notumor", "necrotic", "no_tumor", "tumour present", "enhancing"} <= vocabulary
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40
    offenders = []
    for path in files:
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "labels.py":
            continue
        allowed = SYNTHESIZER_TISSUES.get(rel, set())
        offenders += [f"{rel}:{line} {text!r}" for line, text in name_literals(path.read_text(encoding="utf-8"),
                                                                               vocabulary)
                      if text.lower() not in allowed]
    assert offenders == [], "take these names from brats_keras.labels:\n" + "\n".join(offenders)


def test_labels_imports_nothing_of_the_project():
    tree = ast.parse((PACKAGE / "labels.py").read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "dataclasses", "typing", "numpy", "collections"}, imported
