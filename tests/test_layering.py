"""The package's layering (docs/architecture.md, DESIGN.md "Target of the runner redesign"), checked on the
source with ``ast``:

(a) nothing below the runner imports ``brats_keras.reporting``: no module of ``data/``, ``layers/``,
    ``models/``, ``evaluation/``, nor ``training``, ``losses``, ``metrics``, ``callbacks``;
(b) no function body imports one of the project's own modules (``brats_keras…``), in the package, the
    experiment scripts and ``data_prep/``, except the few in :data:`FUNCTION_IMPORTS_ALLOWED`, each with
    its reason.

``BRATS_KERAS_LAYERING_ROOT`` points the checks at another checkout (e.g. to see them fail on an older
tree); by default they read this one.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("BRATS_KERAS_LAYERING_ROOT", REPO))

BELOW_REPORTING = ("brats_keras/data/", "brats_keras/layers/", "brats_keras/models/", "brats_keras/evaluation/",
                   "brats_keras/evaluation.py", "brats_keras/training.py", "brats_keras/losses.py",
                   "brats_keras/metrics.py", "brats_keras/callbacks.py")
"""Files (or folders, ending in ``/``) that may not import ``brats_keras.reporting``."""

SCANNED = ("brats_keras", "experiments", "data_prep")
"""Folders whose functions may not import the project's own modules (outside the allow-list)."""

FUNCTION_IMPORTS_ALLOWED = {
    # `predict` needs Keras and TensorFlow (configs.base and predict import keras); `evaluate` and --help
    # run without loading either.
    ("brats_keras/cli.py", "predict_command"): {"brats_keras.configs.base", "brats_keras.predict"},
    # data.pipeline imports TensorFlow itself; the bench's train3d / inference children may run on JAX and
    # report their own peak host memory, so only the `pipeline` benchmark loads it.
    ("brats_keras/bench.py", "bench_pipeline"): {"brats_keras.data.pipeline"},
    # the experiments' input: tf.data (TensorFlow) on the TensorFlow backend only, so that JAX runs without it.
    ("brats_keras/data/inputs.py", "input_dataset"): {"brats_keras.data.pipeline"},
}
"""``(file, function qualname) → modules`` a function body may import, with the reason beside each entry."""


def _project_modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The ``brats_keras`` modules an import statement names (``from brats_keras import x`` → ``brats_keras.x``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == "brats_keras" or a.name.startswith("brats_keras.")]
    if node.level or not node.module or not (node.module == "brats_keras" or node.module.startswith("brats_keras.")):
        return []
    if node.module == "brats_keras":
        return [f"brats_keras.{a.name}" for a in node.names]
    return [node.module]


def reporting_imports(source: str) -> list[int]:
    """Line numbers of every import of ``brats_keras.reporting`` (or a module inside it) in ``source``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = _project_modules(node)
            if any(n == "brats_keras.reporting" or n.startswith("brats_keras.reporting.") for n in names):
                lines.append(node.lineno)
    return lines


def function_imports(source: str) -> list[tuple[str, int, str]]:
    """``(function qualname, line, module)`` of every project import inside a function body of ``source``."""
    found = []

    def visit(node: ast.AST, scope: list[str], in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                is_function = not isinstance(child, ast.ClassDef)
                visit(child, scope + [child.name], in_function or is_function)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                if in_function:
                    found.extend((".".join(scope), child.lineno, m) for m in _project_modules(child))
            else:
                visit(child, scope, in_function)

    visit(ast.parse(source), [], False)
    return found


def _files(root: Path, folders) -> list[Path]:
    return sorted(p for folder in folders for p in (root / folder).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_checks_find_what_they_look_for():
    source = (
        "import numpy as np\n"
        "from brats_keras.reporting import epoch_table\n"
        "from brats_keras import reporting\n"
        "import brats_keras.reporting.figures\n"
        "from brats_keras.io import atomic_path\n"
        "class A:\n"
        "    def m(self):\n"
        "        from brats_keras.data import splits\n"
        "        def inner():\n"
        "            import brats_keras.models\n"
        "def f():\n"
        "    import json\n"
        "    from brats_keras import io\n"
    )
    assert reporting_imports(source) == [2, 3, 4]
    assert function_imports(source) == [("A.m", 8, "brats_keras.data"), ("A.m.inner", 10, "brats_keras.models"),
                                        ("f", 13, "brats_keras.io")]


def test_nothing_below_the_runner_imports_reporting():
    below = [p for p in _files(ROOT, ("brats_keras",))
             if any(_rel(p) == b or (b.endswith("/") and _rel(p).startswith(b)) for b in BELOW_REPORTING)]
    assert any(_rel(p) == "brats_keras/training.py" for p in below) and len(below) > 20  # the walk found them
    offenders = {_rel(p): lines for p in below if (lines := reporting_imports(p.read_text(encoding="utf-8")))}
    assert offenders == {}, f"brats_keras.reporting imported below the runner (file: lines): {offenders}"


def test_no_function_level_imports_of_the_project_outside_the_allow_list():
    files = _files(ROOT, SCANNED)
    assert len(files) > 40
    offenders, used = [], set()
    for path in files:
        for qualname, line, module in function_imports(path.read_text(encoding="utf-8")):
            key = (_rel(path), qualname)
            if module in FUNCTION_IMPORTS_ALLOWED.get(key, ()):
                used.add((key, module))
            else:
                offenders.append(f"{_rel(path)}:{line} {qualname}: {module}")
    assert offenders == [], "move these imports to module level (or fix the cycle):\n" + "\n".join(offenders)
    allowed = {(key, m) for key, modules in FUNCTION_IMPORTS_ALLOWED.items() for m in modules}
    assert used == allowed, f"allow-list entries no longer needed: {sorted(allowed - used)}"


@pytest.mark.skipif(ROOT != REPO, reason="imports this checkout's package")
def test_moved_names_are_one_object_at_every_path():
    from brats_keras import evaluation, io, reporting
    from brats_keras.data import figshare
    from brats_keras.evaluation import binary, classification, volumes

    assert reporting.confusion_matrix is evaluation.confusion_matrix is classification.confusion_matrix
    assert reporting.classification_report is evaluation.classification_report
    assert reporting.read_history_csv is io.read_history_csv and reporting.write_history_csv is io.write_history_csv
    for module in (binary, classification, volumes):
        assert {n: getattr(evaluation, n) for n in module.__all__} == {n: getattr(module, n) for n in module.__all__}
    for package in (reporting, evaluation, figshare):
        assert [n for n in package.__all__ if not hasattr(package, n)] == [], package.__name__
    assert figshare.write_figshare_dataset.__module__ == "brats_keras.data.figshare.writer"
    assert figshare.read_figshare_mat.__module__ == "brats_keras.data.figshare.reader"
