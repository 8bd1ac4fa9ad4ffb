"""Tests of brats_keras.reporting (tables beside the paper's, figures) and of what it renders: history files
(brats_keras.io) and class reports (brats_keras.evaluation.classification)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brats_keras import reporting as rp
from brats_keras.evaluation import classification_report, confusion_matrix
from brats_keras.io import read_history_csv, write_history_csv

pytestmark = pytest.mark.backend_agnostic

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Paper 1, Table 6.1 (test accuracy / loss in percent), as the paper prints it.
TABLE_6_1 = {
    5: {"val_accuracy": 97.91, "val_loss": 9.09},
    6: {"val_accuracy": 97.06, "val_loss": 10.41},
    8: {"val_accuracy": 97.48, "val_loss": 12.43},
}
PERCENT_COLUMNS = [("val_accuracy", "test acc (%)", "percent"), ("val_loss", "test loss (%)", "percent")]


def parse_table(markdown: str) -> list[dict[str, str]]:
    """Rows of the (single) Markdown table in ``markdown`` as header -> cell dicts."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
    header, body = split[0], split[2:]
    assert all(len(row) == len(header) for row in body)
    return [dict(zip(header, row)) for row in body]


# ------------------------------------------------------------------------------------------ tables


def test_epoch_table_rows_are_paper_epochs_and_unreached_epochs_read_not_run():
    measured = {e: {"val_accuracy": 0.9000 + e / 1000, "val_loss": 0.2000 + e / 1000} for e in range(1, 7)}
    table = rp.epoch_table(measured, TABLE_6_1, PERCENT_COLUMNS, title="Table 6.1")
    rows = parse_table(table)

    assert [r["epoch"] for r in rows] == ["5", "6", "8"]  # measured epochs 1-4 are omitted
    assert rows[0]["test acc (%) — measured"] == "90.50"  # 0.905 shown in percent
    assert rows[0]["test acc (%) — paper"] == "97.91"  # paper value unscaled
    assert rows[1]["test loss (%) — measured"] == "20.60"
    assert rows[1]["test loss (%) — paper"] == "10.41"
    # Epoch 8 was never reached: "not run" in the measured columns, the paper's value beside it.
    assert rows[2]["test acc (%) — measured"] == rp.NOT_RUN
    assert rows[2]["test loss (%) — measured"] == rp.NOT_RUN
    assert rows[2]["test acc (%) — paper"] == "97.48"
    measured_cells = {v for r in rows for k, v in r.items() if k.endswith("measured")}
    paper_cells = {f"{v:.2f}" for row in TABLE_6_1.values() for v in row.values()}
    assert not measured_cells & paper_cells
    assert "up to epoch 6" in table and "omitted" in table


def test_epoch_table_missing_metric_and_measured_only_column():
    measured = {5: {"val_accuracy": 0.97}}
    cols = PERCENT_COLUMNS + [rp.Column("val_dice_wt", "Dice WT", in_paper=False)]
    rows = parse_table(rp.epoch_table(measured, {5: TABLE_6_1[5]}, cols))
    assert rows[0]["test loss (%) — measured"] == rp.NOT_MEASURED
    assert rows[0]["Dice WT — measured"] == rp.NOT_MEASURED
    assert "Dice WT — paper" not in rows[0]


def test_epoch_table_paper_cell_missing_reads_dash():
    paper = {2: {"accuracy": 98.43}}  # no loss for this epoch in the paper
    rows = parse_table(rp.epoch_table({2: {"accuracy": 0.5, "loss": 0.25}}, paper,
                                      [("accuracy", "acc", 100), ("loss", "loss", 100, 3)]))
    assert rows[0] == {"epoch": "2", "acc — measured": "50.00", "acc — paper": "98.43",
                       "loss — measured": "25.000", "loss — paper": rp.NOT_IN_PAPER}


def test_synthetic_banner_only_when_asked():
    plain = rp.epoch_table({5: {"val_accuracy": 0.9}}, TABLE_6_1, PERCENT_COLUMNS)
    synthetic = rp.epoch_table({5: {"val_accuracy": 0.9}}, TABLE_6_1, PERCENT_COLUMNS, synthetic=True)
    assert "SYNTHETIC" not in plain
    assert rp.SYNTHETIC_WARNING in synthetic and "NOT a replication" in synthetic
    table_iii = rp.comparison_table([], [{"model": "U-Net", "iou": 0.6}], synthetic=True)
    assert rp.SYNTHETIC_WARNING in table_iii


@pytest.mark.parametrize(
    "measured, paper, columns",
    [
        ({1: {}}, {}, PERCENT_COLUMNS),  # paper reports no epochs
        ({0: {}}, TABLE_6_1, PERCENT_COLUMNS),  # epochs are 1-based
        ({}, TABLE_6_1, []),  # no columns
        ({}, TABLE_6_1, [("val_loss", "loss", "permille")]),  # unknown scale
        ({}, TABLE_6_1, [("val_loss",)]),  # too short a column spec
    ],
)
def test_epoch_table_rejects_bad_arguments(measured, paper, columns):
    with pytest.raises(ValueError):
        rp.epoch_table(measured, paper, columns)


def test_comparison_table_paper_order_not_run_and_extra_rows():
    paper = [{"model": "Simple U-Net", "acc_train": 0.9908, "iou_val": 0.6753},
             {"model": "Optimized U-Net", "acc_train": 0.9932, "iou_val": 0.6675}]
    measured = [{"model": "Extra baseline", "acc_train": 0.5},
                {"model": "Simple U-Net", "acc_train": 0.81234, "iou_val": 0.12345}]
    rows = parse_table(rp.comparison_table(measured, paper))
    assert [r["model"] for r in rows] == ["Simple U-Net", "Optimized U-Net", "Extra baseline"]
    assert rows[0]["acc_train — measured"] == "0.8123" and rows[0]["acc_train — paper"] == "0.9908"
    assert rows[1]["acc_train — measured"] == rp.NOT_RUN and rows[1]["iou_val — paper"] == "0.6675"
    assert rows[2]["acc_train — paper"] == rp.NOT_IN_PAPER and rows[2]["iou_val — measured"] == rp.NOT_MEASURED


def test_comparison_table_writes_measured_text_as_it_is():
    rows = parse_table(rp.comparison_table(
        [{"model": "U-Net", "dsc": 0.5, "early_stop": "epoch 12 (best 7)"}], [{"model": "U-Net", "dsc": 83.45}],
        [rp.Column("dsc", "DSC (%)", 100, 2), rp.Column("early_stop", "early stopping", in_paper=False)]))
    assert rows[0]["DSC (%) — measured"] == "50.00" and rows[0]["early stopping — measured"] == "epoch 12 (best 7)"


def test_comparison_table_compound_key_and_duplicates():
    paper = [{"model": "Spatial U-Net", "set": "train-2020", "tc": 0.9027},
             {"model": "Spatial U-Net", "set": "test-2021", "tc": 0.8039}]
    measured = [{"model": "Spatial U-Net", "set": "test-2021", "tc": 0.5}]
    rows = parse_table(rp.comparison_table(measured, paper, [("tc", "Dice TC")], key=("model", "set")))
    assert [(r["set"], r["Dice TC — measured"], r["Dice TC — paper"]) for r in rows] == [
        ("train-2020", rp.NOT_RUN, "0.9027"), ("test-2021", "0.5000", "0.8039")]
    with pytest.raises(ValueError, match="share the key"):
        rp.comparison_table(measured * 2, paper, key=("model", "set"))
    with pytest.raises(ValueError, match="no key field"):
        rp.comparison_table([{"tc": 0.5}], paper, key=("model", "set"))


# ----------------------------------------------------------------------------------------- history


def test_history_to_epoch_dict_is_one_based_and_checks_lengths():
    epochs = rp.history_to_epoch_dict({"loss": [0.5, 0.4], "val_loss": [0.6, 0.55]})
    assert epochs == {1: {"loss": 0.5, "val_loss": 0.6}, 2: {"loss": 0.4, "val_loss": 0.55}}
    with pytest.raises(ValueError, match="different numbers of epochs"):
        rp.history_to_epoch_dict({"loss": [0.5, 0.4], "val_loss": [0.6]})


def test_history_csv_round_trip(tmp_path):
    history = {"loss": [0.9, 0.123456789012345, 0.1], "accuracy": [0.5, 0.75, 0.875],
               "val_loss": [1.0, math.nan, 0.2]}
    path = write_history_csv(history, tmp_path / "history.csv")
    header = path.read_text().splitlines()[0]
    assert header == "epoch,accuracy,loss,val_loss"  # CSVLogger's layout: epoch, then sorted keys
    assert path.read_text().splitlines()[1].startswith("0,")  # epochs counted from 0
    back = read_history_csv(path)
    assert sorted(back) == sorted(history)
    for key in history:
        np.testing.assert_array_equal(back[key], history[key])  # exact, NaN included
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]


def test_read_history_csv_written_by_keras_csvlogger(tmp_path):
    keras = pytest.importorskip("keras")
    path = tmp_path / "history.csv"
    logger = keras.callbacks.CSVLogger(str(path))
    logger.on_train_begin()
    for epoch, (loss, acc) in enumerate([(0.7, 0.6), (0.5, 0.8)]):
        logger.on_epoch_end(epoch, {"loss": loss, "accuracy": acc})
    logger.on_train_end()
    assert "val_loss" in path.read_text()  # CSVLogger adds NA val_ columns to a run without validation
    back = read_history_csv(path)
    assert back == {"accuracy": [0.6, 0.8], "loss": [0.7, 0.5]}  # never-measured columns dropped
    assert rp.history_to_epoch_dict(back)[2] == {"accuracy": 0.8, "loss": 0.5}


def test_read_history_csv_resumed_runs_and_gaps(tmp_path):
    resumed = tmp_path / "resumed.csv"
    resumed.write_text("epoch,loss,val_loss\n0,0.9,NA\n1,0.8,0.85\n1,0.7,0.75\n2,0.6,0.65\n")
    back = read_history_csv(resumed)
    assert back["loss"] == [0.9, 0.7, 0.6]  # the re-logged epoch 1: last line wins
    assert math.isnan(back["val_loss"][0]) and back["val_loss"][1:] == [0.75, 0.65]
    gap = tmp_path / "gap.csv"
    gap.write_text("epoch,loss\n0,0.9\n3,0.6\n")
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        read_history_csv(gap)
    not_history = tmp_path / "other.csv"
    not_history.write_text("step,loss\n0,0.9\n")
    with pytest.raises(ValueError, match="epoch"):
        read_history_csv(not_history)


# ----------------------------------------------------------------------------------------- figures


def brain_slice(size=24):
    """Ellipse 'brain' with a 3-region tumour; truth and a slightly shifted prediction."""
    yy, xx = np.mgrid[:size, :size]
    image = np.where(((xx - size / 2) / (size * 0.4)) ** 2 + ((yy - size / 2) / (size * 0.45)) ** 2 <= 1, 300.0, 0)
    d = (xx - size * 0.6) ** 2 + (yy - size * 0.45) ** 2
    truth = np.select([d <= 2, d <= 8, d <= 20], [1, 3, 2], 0)
    pred = np.roll(truth, 1, axis=1)
    return image, truth, pred


def check_png(path, width_in, height_in, dpi):
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 2000
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (round(height_in * dpi), round(width_in * dpi))
    assert pixels.std() > 0.05  # not a blank canvas
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    return pixels


def test_plot_training_curves_png(tmp_path):
    history = {"loss": [0.9, 0.5, 0.3, 0.25], "val_loss": [1.0, 0.7, 0.5, 0.45],
               "accuracy": [0.6, 0.8, 0.9, 0.92]}  # no val_accuracy: tolerated
    out = rp.plot_training_curves(history, tmp_path / "plots" / "curves.png", title="curves",
                                  figsize=(6, 3), dpi=50)
    assert out == tmp_path / "plots" / "curves.png"
    check_png(out, 6, 3, 50)
    with pytest.raises(ValueError, match="dice"):
        rp.plot_training_curves(history, tmp_path / "x.png", metrics=("dice",))


def test_plot_lr_schedule_marks_restored_epochs(tmp_path):
    history = {"lr": [1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4], "weights_restored": [0, 0, 1, 0, 1, 0]}
    out = rp.plot_lr_schedule(history, tmp_path / "lr.png", title="dwell", synthetic=True, dpi=60)
    pixels = check_png(out, 6.5, 4.0, 60)[..., :3]
    red = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.35) & (pixels[..., 2] < 0.35)
    assert red.sum() > 40  # the restore markers (tab:red)
    plain = rp.plot_lr_schedule({"lr": history["lr"]}, tmp_path / "plain" / "lr.png", dpi=60)
    plain_pixels = check_png(plain, 6.5, 4.0, 60)[..., :3]
    assert ((plain_pixels[..., 0] > 0.7) & (plain_pixels[..., 1] < 0.35) & (plain_pixels[..., 2] < 0.35)).sum() == 0
    with pytest.raises(ValueError, match="'lr'"):
        rp.plot_lr_schedule({"loss": [1.0]}, tmp_path / "x.png")


def test_plot_prediction_overlay_png_and_class_colours(tmp_path):
    image, truth, _ = brain_slice()
    image[:] = 0.0  # black background so the overlay colour is measurable
    truth[:] = 0
    truth[4:20, 4:20] = 3  # enhancing tumour (yellow) in the ground truth only
    out = rp.plot_prediction_overlay(image, truth, np.zeros_like(truth), tmp_path / "overlay.png",
                                     num_classes=4, figsize=(9, 3.5), dpi=50)
    pixels = check_png(out, 9, 3.5, 50)[..., :3]
    body = pixels[: int(pixels.shape[0] * 0.75)]  # above the legend
    yellow = (body[..., 0] > 0.4) & (body[..., 1] > 0.35) & (body[..., 2] < 0.15)
    third = body.shape[1] // 3
    assert yellow[:, third : 2 * third].sum() > 50  # ground-truth panel shows the class
    assert yellow[:, :third].sum() == 0 and yellow[:, 2 * third :].sum() == 0  # image / prediction panels do not


def test_plot_prediction_overlay_binary_auto(tmp_path):
    image, truth, pred = brain_slice()
    sigmoid = (pred > 0)[..., None] * 0.9  # (H, W, 1) probabilities, as a sigmoid head gives them
    out = rp.plot_prediction_overlay(image, truth > 0, sigmoid, tmp_path / "binary.png", title="binary",
                                     figsize=(9, 3.5), dpi=50)
    check_png(out, 9, 3.5, 50)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(truth=np.zeros((10, 10), int)), "does not match"),
        (dict(pred=np.full((24, 24), 4)), "0..3"),
        (dict(num_classes=3), "num_classes"),
        (dict(num_classes=2), "0..1"),
        (dict(class_names=["bg", "tumour"]), "class_names"),
        (dict(image_slice=np.zeros((24, 24, 2))), "image_slice"),
        (dict(pred=np.full((24, 24), 0.5)), "integer"),
    ],
)
def test_plot_prediction_overlay_rejects_bad_inputs(tmp_path, change, match):
    image, truth, pred = brain_slice()
    kwargs = dict(image_slice=image, truth=truth, pred=pred, out_png=tmp_path / "bad.png")
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        rp.plot_prediction_overlay(**kwargs)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("normalize", [False, "true"])
def test_plot_confusion_matrix_png(tmp_path, normalize):
    cm = np.array([[5, 1, 0], [0, 0, 0], [2, 0, 7]])  # class 1 has no samples: n/a when normalised
    out = rp.plot_confusion_matrix(cm, ["glioma", "meningioma", "pituitary"], tmp_path / "cm.png",
                                   normalize=normalize, title="cm", synthetic=True, figsize=(5, 4), dpi=50)
    check_png(out, 5, 4, 50)


@pytest.mark.parametrize(
    "cm, names, kwargs",
    [
        (np.ones((2, 3)), ["a", "b"], {}),
        (np.ones((2, 2)), ["a", "b", "c"], {}),
        (-np.ones((2, 2)), ["a", "b"], {}),
        (np.ones((2, 2)), ["a", "b"], {"normalize": "pred"}),
    ],
)
def test_plot_confusion_matrix_rejects_bad_inputs(tmp_path, cm, names, kwargs):
    with pytest.raises(ValueError):
        rp.plot_confusion_matrix(cm, names, tmp_path / "cm.png", **kwargs)


def test_failed_save_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    out = tmp_path / "curves.png"
    out.write_bytes(b"previous")

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(PNG_MAGIC)  # half-written, then the writer dies
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        rp.plot_training_curves({"loss": [1.0, 0.5]}, out, metrics=("loss",), figsize=(3, 2), dpi=40)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


# ------------------------------------------------------------------------------ classification


def test_confusion_matrix_counts_by_hand():
    y_true = [0, 0, 1, 2, 2, 2]
    y_pred = [0, 1, 1, 2, 0, 2]
    expected = [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, 3), expected)
    masks = confusion_matrix(np.array([[0, 1], [1, 1]]), np.array([[0, 0], [1, 1]], dtype=float), 2)
    np.testing.assert_array_equal(masks, [[1, 0], [1, 2]])


@pytest.mark.parametrize(
    "y_true, y_pred, num_classes, match",
    [
        ([0, 1, 2], [0, 1], 3, "shapes differ"),
        ([0, 1, 3], [0, 1, 2], 3, "0..2"),
        ([0, -1], [0, 1], 2, "0..1"),
        ([0, 1], [0, 0.5], 2, "integer"),
        ([], [], 2, "empty"),
        ([0, 1], [0, 1], 1, "num_classes"),
    ],
)
def test_confusion_matrix_rejects_bad_inputs(y_true, y_pred, num_classes, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(y_true, y_pred, num_classes)


def test_classification_report_matches_sklearn():
    from sklearn.metrics import classification_report as sk_report

    rng = np.random.default_rng(7)
    names = ["glioma", "meningioma", "pituitary", "no tumour", "never seen"]
    y_true = rng.integers(0, 4, 200)  # class 4 absent from both: zero-division case
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 4, 200))
    y_pred[:3] = 3
    ours = classification_report(y_true, y_pred, names)
    theirs = sk_report(y_true, y_pred, labels=range(5), target_names=names, output_dict=True, zero_division=0)
    assert set(ours) == set(theirs)
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=1e-12)
    for row in names + ["macro avg", "weighted avg"]:
        for metric in ("precision", "recall", "f1-score", "support"):
            assert ours[row][metric] == pytest.approx(theirs[row][metric], abs=1e-12), (row, metric)
    assert ours["never seen"]["support"] == 0


def test_classification_report_markdown_with_and_without_paper():
    report = classification_report([0, 0, 1, 1], [0, 1, 1, 1], ["glioma", "pituitary"])
    plain = parse_table(rp.classification_report_markdown(report))
    assert plain[0] == {"class": "glioma", "precision": "1.000", "recall": "0.500", "F1": "0.667", "support": "2"}
    paper = {"glioma": {"precision": 0.992, "recall": 0.994, "f1-score": 0.990},
             "meningioma": {"precision": 0.997, "recall": 0.995, "f1-score": 0.991}, "accuracy": 0.9939}
    text = rp.classification_report_markdown(report, paper, synthetic=True)
    rows = {r["class"]: r for r in parse_table(text)}
    assert rows["glioma"]["precision — measured"] == "1.000" and rows["glioma"]["precision — paper"] == "0.992"
    assert rows["meningioma"]["recall — measured"] == rp.NOT_RUN
    assert rows["pituitary"]["F1 — paper"] == rp.NOT_IN_PAPER
    assert "accuracy — measured: 0.7500; accuracy — paper: 0.9939" in text
    assert rp.SYNTHETIC_WARNING in text


def test_classification_report_rejects_bad_inputs():
    with pytest.raises(ValueError, match="0..1"):
        classification_report([0, 2], [0, 1], ["a", "b"])  # class index beyond the names
    with pytest.raises(ValueError, match="distinct"):
        classification_report([0, 1], [0, 1], ["a", "a"])


# --------------------------------------------------------------------------- 3-D volume overlay

VOLUME_SHAPE = (16, 20, 12)


def tumour_volume(corner=(2, 3, 7), size=3, label=3):
    """A zero image and a cube tumour of ``label`` whose far corner is ``corner + size`` (exclusive)."""
    image = np.zeros(VOLUME_SHAPE)
    truth = np.zeros(VOLUME_SHAPE, dtype=np.int64)
    i, j, k = corner
    truth[i:i + size, j:j + size, k:k + size] = label
    return image, truth


def yellow_blobs(pixels):
    """Connected yellow (enhancing-tumour colour over black) regions per column third, above the legend."""
    from scipy import ndimage

    body = pixels[: int(pixels.shape[0] * 0.9), :, :3]
    yellow = (body[..., 0] > 0.4) & (body[..., 1] > 0.35) & (body[..., 2] < 0.15)
    third = body.shape[1] // 3
    return [ndimage.label(yellow[:, c * third:(c + 1) * third])[1] for c in range(3)]


def test_plot_volume_overlay_png_cuts_through_the_truth_centroid(tmp_path):
    image, truth = tumour_volume()  # the cube misses every plane through the volume centre (8, 10, 6)
    out = rp.plot_volume_overlay(image, truth, np.zeros_like(truth), tmp_path / "vol.png", num_classes=4,
                                 title="volume", synthetic=True, figsize=(6, 7), dpi=40)
    assert out == tmp_path / "vol.png"
    pixels = check_png(out, 6, 7, 40)
    # One yellow blob per plane in the ground-truth column only: every row's plane goes through the cube.
    assert yellow_blobs(pixels) == [0, 3, 0]


def test_plot_volume_overlay_explicit_center_misses_the_tumour(tmp_path):
    image, truth = tumour_volume()
    out = rp.plot_volume_overlay(image, truth, truth, tmp_path / "vol.png", center=(8, 10, 0),
                                 figsize=(6, 7), dpi=40)
    pixels = check_png(out, 6, 7, 40)
    assert yellow_blobs(pixels) == [0, 0, 0]  # x=8, y=10, z=0: all three planes miss the cube


def test_plot_volume_overlay_one_hot_and_channels_draw_the_same_figure(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.normal(100.0, 20.0, VOLUME_SHAPE + (2,))  # two channels: the first is the one drawn
    _, truth = tumour_volume(label=2)
    truth[4:6, 5:7, 8:10] = 1
    pred = np.roll(truth, 1, axis=0)
    eye = np.eye(4)
    size = {"figsize": (5, 6), "dpi": 30}
    plain = rp.plot_volume_overlay(image[..., 0], truth, pred, tmp_path / "a" / "plain.png", **size)
    one_hot = rp.plot_volume_overlay(image, eye[truth], eye[pred], tmp_path / "b" / "onehot.png", **size)
    second = rp.plot_volume_overlay(image[..., 1], truth, pred, tmp_path / "c" / "second.png", **size)
    a, b, c = (check_png(path, 5, 6, 30) for path in (plain, one_hot, second))
    np.testing.assert_array_equal(a, b)  # one-hot masks and (X, Y, Z, C) images: same figure
    assert not np.array_equal(a, c)  # and the channels do look different


def test_orthogonal_planes_orientation():
    x, y, z = VOLUME_SHAPE
    volume = np.zeros(VOLUME_SHAPE)
    volume[0, 0, z - 1] = 1  # subject's right, anterior, superior corner in BraTS voxel order
    axial, coronal, sagittal = rp.orthogonal_planes(volume, (0, 0, z - 1))
    assert axial.shape == (y, x) and coronal.shape == (z, x) and sagittal.shape == (z, y)
    assert axial[0, 0] == 1  # axial: anterior at the top, subject's right on the screen's left
    assert coronal[0, 0] == 1  # coronal: superior at the top, subject's right on the left
    assert sagittal[0, 0] == 1  # sagittal: superior at the top, anterior on the left
    assert axial.sum() == coronal.sum() == sagittal.sum() == 1
    assert [name for name, _, _ in rp.VOLUME_PLANES] == ["axial", "coronal", "sagittal"]


def test_overlay_center_truth_centroid_then_prediction_then_volume_centre():
    _, truth = tumour_volume(corner=(2, 3, 7), size=3)
    truth[2, 3, 7] = 0  # an off-centre hole moves the centroid slightly; rounding keeps (3, 4, 8)
    pred = np.zeros_like(truth)
    pred[10:14, 12:14, 1:2] = 2
    assert rp.overlay_center(truth, pred) == (3, 4, 8)
    assert all(isinstance(v, int) for v in rp.overlay_center(truth, pred))
    elongated = np.zeros_like(truth)
    elongated[5, 6, 2:6] = 1  # centroid z = 3.5 -> rounds to the nearest voxel (4, half to even)
    assert rp.overlay_center(elongated, pred) == (5, 6, 4)
    assert rp.overlay_center(np.zeros_like(truth), pred) == (12, 12, 1)  # no tumour in the truth: pred's
    assert rp.overlay_center(np.zeros_like(truth), np.zeros_like(truth)) == (8, 10, 6)  # volume centre
    assert rp.overlay_center(np.eye(4)[truth], np.eye(4)[pred]) == (3, 4, 8)  # one-hot accepted
    with pytest.raises(ValueError, match="pred"):
        rp.overlay_center(truth, pred[:, :, :-1])


@pytest.mark.parametrize(
    "change, match",
    [
        ({"truth": np.zeros((16, 20, 11), int)}, "truth: shape"),
        ({"pred": np.zeros((16, 19, 12), int)}, "pred: shape"),
        ({"image": np.zeros((16, 20))}, "image"),
        ({"center": (16, 0, 0)}, "center"),
        ({"center": (0, -1, 0)}, "center"),
        ({"center": (0, 0)}, "center"),
        ({"center": (1.5, 2, 3)}, "center"),
        ({"pred": np.full(VOLUME_SHAPE, 4)}, "pred: labels must be in 0..3"),
        ({"truth": np.full(VOLUME_SHAPE, -1)}, "truth: labels"),
        ({"num_classes": 2}, r"truth: labels must be in 0\.\.1"),
        ({"pred": np.full(VOLUME_SHAPE, 0.5)}, "integer"),
    ],
)
def test_plot_volume_overlay_rejects_bad_inputs(tmp_path, change, match):
    image, truth = tumour_volume()
    kwargs = {"image": image, "truth": truth, "pred": truth, "out_png": tmp_path / "bad.png"}
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        rp.plot_volume_overlay(**kwargs)
    assert not any(tmp_path.iterdir())


def test_plot_curve_panels_draws_one_curve_per_run(tmp_path):
    pre = {"loss": [0.9, 0.6, 0.5], "val_loss": [0.95, 0.7, 0.6], "accuracy": [0.9, 0.95, 0.97],
           "val_dice_coef": [0.1, 0.4, 0.5]}
    raw = {"loss": [0.95, 0.8, 0.7], "val_loss": [0.99, 0.9, 0.85], "accuracy": [0.9, 0.93, 0.94]}
    panels = [("loss", "training loss"), ("val_loss", "validation loss"), ("accuracy", "training accuracy"),
              ("val_dice_coef", "validation Dice")]
    out = rp.plot_curve_panels({"with": pre, "without": raw}, tmp_path / "fig.png", panels, dpi=50, synthetic=True)
    pixels = check_png(out, 10.0, 7.6, 50)[..., :3]
    orange = (pixels[..., 0] > 0.9) & (pixels[..., 1] > 0.4) & (pixels[..., 1] < 0.6) & (pixels[..., 2] < 0.2)
    assert orange.sum() > 100  # the second run's curves (tab:orange)
    with pytest.raises(ValueError, match="val_dice"):
        rp.plot_curve_panels({"without": raw}, tmp_path / "x.png", [("val_dice", "Dice")])
    with pytest.raises(ValueError, match="at least one"):
        rp.plot_curve_panels({}, tmp_path / "x.png", panels)


def test_plot_bias_correction_png(tmp_path):
    yy, xx = np.mgrid[0:40, 0:50]
    brain = (yy - 20) ** 2 + (xx - 25) ** 2 < 300
    field = np.where(brain, 0.8 + 0.4 * xx / 50, 1.0)
    clean = np.where(brain, 100.0, 0.0)
    out = rp.plot_bias_correction(clean * field, field, (clean - 100) * brain, tmp_path / "bias.png", dpi=50)
    check_png(out, 13.5, 4.6, 50)
    with pytest.raises(ValueError, match="must be equal"):
        rp.plot_bias_correction(clean, field[:10], clean, tmp_path / "x.png")


def test_a_table_without_paper_values_does_not_pretend_to_have_them():
    text = rp.comparison_table([{"run": "a", "dice": 0.5}], [], [rp.Column("dice", "Dice", 1, 3, in_paper=False)],
                               key="run")
    assert "| run | Dice |" in text and "| a | 0.500 |" in text
    assert "paper" not in text.replace("the paper has nothing", "")


def test_plot_image_grid_draws_masks_in_magenta(tmp_path):
    yy, xx = np.mgrid[0:32, 0:32]
    image = np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 80.0)
    mask = (yy - 16) ** 2 + (xx - 16) ** 2 < 30
    rows = [[(image, None), (image[..., None], mask), (image * 2, mask[..., None])]] * 2
    out = rp.plot_image_grid(rows, ["image", "truth", "prediction"], tmp_path / "grid.png",
                             row_titles=["a", "b"], dpi=50, synthetic=True)
    pixels = check_png(out, 2.4 * 3, 2.4 * 2 + 0.9, 50)[..., :3]
    magenta = (pixels[..., 0] > 0.6) & (pixels[..., 1] < 0.45) & (pixels[..., 2] > 0.5)
    assert magenta.sum() > 50
    with pytest.raises(ValueError, match="every row needs 3"):
        rp.plot_image_grid([[(image, None)]], ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="differ"):
        rp.plot_image_grid([[(image, mask[:8])]], ["a"], tmp_path / "x.png")
