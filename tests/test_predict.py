"""``python -m brats_keras predict``: trained tiny models → NIfTI label maps on the input's grid."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from brats_keras.cli import main
from brats_keras.configs.base import config_to_dict
from brats_keras.configs.paper1 import paper1_config
from brats_keras.configs.paper2 import QUICK_CROP, paper2_config
from brats_keras.data.brats import discover_cases, load_case, write_label_nifti
from brats_keras.data.slices2d import SliceSettings, prepare_case_slices
from brats_keras.data.volumes3d import Preprocess3DSettings, preprocess_case_3d
from brats_keras.export import export_checked, export_model, find_inference_spec, load_predictor
from brats_keras.inference import InferenceSpec, predict_volume_2d, predict_volume_3d
from brats_keras.io import atomic_write_json
from brats_keras.models import create_model
from brats_keras.predict import PREDICTIONS_FILE
from tests.helpers import REPO, TINY_SHAPE

SLICES = SliceSettings(start=8, count=24, step=1, size=32)
VOLUME = Preprocess3DSettings(crop=((8, 40), (8, 40), (4, 36)))  # 32³ windows on 48×48×40 cases


def _train_2d(cases) -> object:
    import keras

    keras.utils.set_random_seed(0)
    x, y = zip(*(prepare_case_slices(c, SLICES) for c in cases))
    x, y = np.concatenate(x), np.eye(4, dtype="float32")[np.concatenate(y)]
    # Glorot-uniform: the initialisation these 3 epochs of a 4-filter U-Net were chosen for (with the
    # builder's He-normal default this tiny model has not left all-background by then)
    model = create_model("unet2d", input_shape=(32, 32, 2), num_classes=4, filters=4,
                         kernel_initializer="glorot_uniform")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    return model


def _train_3d(cases) -> object:
    import keras

    keras.utils.set_random_seed(0)
    x, y = zip(*(preprocess_case_3d(c, VOLUME)[:2] for c in cases))
    x, y = np.stack(x), np.eye(4, dtype="float32")[np.stack(y)]
    model = create_model("unet3d_modified", input_shape=(32, 32, 32, 3), filters=4)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=2, epochs=2, verbose=0)
    return model


@pytest.fixture(scope="module")
def trained(synthetic_brats, tmp_path_factory):
    """Run-like folders with a trained tiny 2D and 3D model, exported as the experiments do."""
    cases = discover_cases(synthetic_brats)[:3]
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for kind, model, spec in (
        ("2d", _train_2d(cases), InferenceSpec.for_slices(SLICES, experiment="test", model="unet2d", synthetic=True)),
        ("3d", _train_3d(cases), InferenceSpec.for_volume(VOLUME, experiment="test", model="unet3d_modified",
                                                          synthetic=True)),
    ):
        folder = root / kind / spec.model
        sample = np.zeros((1, *model.input_shape[1:]), np.float32)
        export_checked(model, folder / "model.keras", folder / "saved_model", sample, spec)
        out[kind] = (model, folder, spec)
    return out


def _input_image(case_dir):
    return nib.load(str(next(case_dir.glob("*_flair.nii.gz"))))


def _check_written(out_dir, data_dir):
    for case_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        written = nib.load(str(out_dir / f"{case_dir.name}.nii.gz"))
        reference = _input_image(case_dir)
        labels = np.asarray(written.dataobj)
        assert labels.shape == reference.shape == TINY_SHAPE and labels.dtype == np.uint8
        np.testing.assert_array_equal(written.affine, reference.affine)
        assert written.header.get_zooms() == reference.header.get_zooms()
        assert (int(written.header["sform_code"]), int(written.header["qform_code"])) == \
            (int(reference.header["sform_code"]), int(reference.header["qform_code"]))
        assert set(np.unique(labels).tolist()) <= {0, 1, 2, 4}


def test_2d_model_writes_label_maps_on_the_input_grid(trained, synthetic_brats, tmp_path):
    model, folder, spec = trained["2d"]
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(folder / "model.keras"), "--data-dir", str(synthetic_brats),
                 "--out", str(out)]) == 0
    _check_written(out, synthetic_brats)
    record = json.loads((out / PREDICTIONS_FILE).read_text())
    assert record["failed"] == 0 and record["synthetic_data"] and record["model_trained_on_synthetic_data"]
    assert all(c["status"] == "written" for c in record["cases"].values()) and len(record["cases"]) == 6
    # every slice with brain voxels went through the model, not only the training window 8..31
    case = load_case(discover_cases(synthetic_brats)[0], SLICES.modalities, with_label=False)
    expected = predict_volume_2d(model.predict_on_batch, case, SLICES, slices="all", skip_empty=True)
    written = np.asarray(nib.load(str(out / f"{case.case_id}.nii.gz")).dataobj)
    assert np.mean(written == expected) > 0.999  # XLA vs plain graph: at most a few argmax ties differ
    assert record["cases"][case.case_id]["slices"] == int(case.image.any(axis=(0, 1, 3)).sum()) > SLICES.count
    assert written.any()  # the trained model finds tumour


def test_predicting_empty_slices_changes_nothing_outside_the_brain(trained, synthetic_brats):
    model, _, _ = trained["2d"]
    case = load_case(discover_cases(synthetic_brats)[1], SLICES.modalities, with_label=False)
    case.image[:, :, :3] = 0  # three slices without brain
    skipped = predict_volume_2d(model.predict_on_batch, case, SLICES, slices="all", skip_empty=True)
    everything = predict_volume_2d(model.predict_on_batch, case, SLICES, slices="all", skip_empty=False)
    assert not skipped[:, :, :3].any()
    np.testing.assert_array_equal(skipped[:, :, 3:], everything[:, :, 3:])


def test_saved_model_gives_the_labels_of_the_keras_file(trained, synthetic_brats, tmp_path):
    _, folder, _ = trained["2d"]
    one_case = synthetic_brats / "BraTS20_Training_001"
    for name in ("model.keras", "saved_model"):
        assert main(["predict", "--model", str(folder / name), "--data-dir", str(one_case),
                     "--out", str(tmp_path / name)]) == 0
    a, b = (np.asarray(nib.load(str(tmp_path / n / "BraTS20_Training_001.nii.gz")).dataobj)
            for n in ("model.keras", "saved_model"))
    assert np.mean(a == b) > 0.999


def test_3d_model_slides_windows_over_the_whole_volume(trained, synthetic_brats, tmp_path):
    model, folder, spec = trained["3d"]
    out = tmp_path / "pred3d"
    assert main(["predict", "--model", str(folder / "saved_model"), "--data-dir", str(synthetic_brats),
                 "--out", str(out), "--overlap", "0.25", "--blending", "constant"]) == 0
    _check_written(out, synthetic_brats)
    record = json.loads((out / PREDICTIONS_FILE).read_text())
    assert record["settings"] == {"overlap": 0.25, "blending": "constant", "precision": "float32"}
    # 48×48×40 with 32³ windows at 25 % overlap: starts (0, 16) × (0, 16) × (0, 8) = 8 windows
    assert {c["windows"] for c in record["cases"].values()} == {8}
    case = load_case(discover_cases(synthetic_brats)[2], VOLUME.modalities, with_label=False)
    expected = predict_volume_3d(model.predict_on_batch, case, VOLUME, (32, 32, 32), overlap=0.25,
                                 blending="constant")
    written = np.asarray(nib.load(str(out / f"{case.case_id}.nii.gz")).dataobj)
    assert np.mean(written == expected) > 0.999


def test_a_bad_case_is_reported_and_skipped_the_others_complete(trained, synthetic_brats, tmp_path, capsys):
    _, folder, _ = trained["2d"]
    data = tmp_path / "data"
    shutil.copytree(synthetic_brats, data)
    truncated = data / "BraTS20_Training_002" / "BraTS20_Training_002_flair.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:2000])
    (data / "BraTS20_Training_004" / "BraTS20_Training_004_t1ce.nii.gz").unlink()
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(folder / "model.keras"), "--data-dir", str(data), "--out", str(out)]) == 1
    record = json.loads((out / PREDICTIONS_FILE).read_text())
    assert record["failed"] == 2
    assert "BraTS20_Training_002_flair.nii.gz" in record["cases"]["BraTS20_Training_002"]["error"]
    assert "missing t1ce" in record["cases"]["BraTS20_Training_004"]["error"]
    written = sorted(p.name for p in out.glob("*.nii.gz"))
    assert written == [f"BraTS20_Training_00{k}.nii.gz" for k in (1, 3, 5, 6)]
    assert not list(out.glob(".*"))  # no temporary file left behind
    assert "BraTS20_Training_002: FAILED" in capsys.readouterr().out


def test_an_interrupted_run_resumes_and_another_model_is_refused(trained, synthetic_brats, tmp_path, capsys):
    model, folder, spec = trained["2d"]
    out = tmp_path / "pred"
    args = ["predict", "--model", str(folder / "model.keras"), "--data-dir", str(synthetic_brats), "--out", str(out)]
    assert main(args) == 0
    (out / "BraTS20_Training_003.nii.gz").unlink()  # as if the run had stopped before this case
    before = (out / "BraTS20_Training_001.nii.gz").stat().st_mtime_ns
    assert main(args) == 0
    record = json.loads((out / PREDICTIONS_FILE).read_text())
    statuses = {c: o["status"] for c, o in record["cases"].items()}
    assert statuses.pop("BraTS20_Training_003") == "written" and set(statuses.values()) == {"done earlier"}
    assert (out / "BraTS20_Training_001.nii.gz").stat().st_mtime_ns == before

    retrained = tmp_path / "retrained" / "model.keras"
    shutil.copytree(folder, retrained.parent)
    model2 = create_model("unet2d", input_shape=(32, 32, 2), num_classes=4, filters=4)
    export_model(model2, retrained, None, spec)
    capsys.readouterr()
    other = ["predict", "--model", str(retrained), "--data-dir", str(synthetic_brats), "--out", str(out)]
    assert main(other) == 2
    assert "another model" in capsys.readouterr().err
    assert main([*other, "--overwrite"]) == 0
    record = json.loads((out / PREDICTIONS_FILE).read_text())
    assert {o["status"] for o in record["cases"].values()} == {"written"}


def test_preprocessing_comes_from_the_run_config_or_the_error_says_where_it_looked(trained, tmp_path, capsys):
    model, _, _ = trained["2d"]
    run = tmp_path / "run"
    export_model(model, run / "unet2d" / "model.keras", None)  # an export without inference.json
    config = paper1_config(quick=True)
    atomic_write_json(run / "config.json", config_to_dict(config))
    spec, source = find_inference_spec(run / "unet2d" / "model.keras")
    assert source == str(run / "config.json") and spec.kind == "slices2d" and spec.slices == config.data.slices
    assert spec.model == "unet2d" and spec.experiment == "paper1_u_resunet"

    lonely = tmp_path / "elsewhere" / "model.keras"
    lonely.parent.mkdir()
    shutil.copy(run / "unet2d" / "model.keras", lonely)
    assert main(["predict", "--model", str(lonely), "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no record of the pre-processing" in err and "inference.json" in err


def test_a_model_that_does_not_fit_its_spec_is_refused(trained, synthetic_brats, tmp_path, capsys):
    model, _, _ = trained["2d"]
    wrong = InferenceSpec.for_slices(SliceSettings(size=64), model="unet2d")
    export_model(model, tmp_path / "m" / "model.keras", None, wrong)
    assert main(["predict", "--model", str(tmp_path / "m" / "model.keras"), "--data-dir", str(synthetic_brats),
                 "--out", str(tmp_path / "o")]) == 2
    assert "does not match its pre-processing" in capsys.readouterr().err


def test_predictor_pads_the_last_batch_and_keeps_results(trained):
    model, folder, _ = trained["2d"]
    predictor = load_predictor(folder / "model.keras", batch_size=4, jit_compile=False)
    x = np.random.default_rng(0).uniform(size=(6, 32, 32, 2)).astype("float32")
    np.testing.assert_allclose(predictor(x), np.asarray(model.predict_on_batch(x)), atol=1e-5)
    with pytest.raises(ValueError, match="does not match"):
        predictor(x[:, :16])


def test_written_labels_carry_no_intensity_scaling_and_are_deterministic(tmp_path):
    reference = nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), np.diag([1.5, 1.5, 2.0, 1.0]))
    reference.header.set_slope_inter(2.0, 10.0)  # an input whose values are scaled on reading
    reference.header.set_xyzt_units("mm", "sec")
    labels = np.random.default_rng(0).choice([0, 1, 2, 4], size=(6, 5, 4)).astype(np.uint8)
    a = write_label_nifti(tmp_path / "a.nii.gz", labels, reference.affine, reference.header)
    b = write_label_nifti(tmp_path / "b.nii.gz", labels, reference.affine, reference.header)
    assert a.read_bytes() == b.read_bytes()
    back = nib.load(str(a))
    np.testing.assert_array_equal(back.get_fdata(), labels)
    assert back.header.get_zooms() == (1.5, 1.5, 2.0) and back.header.get_xyzt_units() == ("mm", "sec")
    plain = write_label_nifti(tmp_path / "c.nii", labels, reference.affine)
    np.testing.assert_array_equal(np.asarray(nib.load(str(plain)).dataobj), labels)


def test_python_dash_m_entry_point(trained, synthetic_brats, tmp_path):
    _, folder, _ = trained["3d"]
    proc = subprocess.run(
        [sys.executable, "-m", "brats_keras", "predict", "--model", str(folder / "model.keras"),
         "--data-dir", str(synthetic_brats / "BraTS20_Training_001"), "--out", str(tmp_path / "o")],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "o" / "BraTS20_Training_001.nii.gz").is_file()
    assert "SYNTHETIC" in proc.stdout + proc.stderr
    missing = subprocess.run([sys.executable, "-m", "brats_keras", "predict", "--model", str(folder / "nope.keras"),
                              "--data-dir", str(synthetic_brats), "--out", str(tmp_path / "o2")],
                             cwd=REPO, capture_output=True, text=True, timeout=600)
    assert missing.returncode == 2 and "nope.keras" in missing.stderr


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_keras_file_predicts_on_any_backend(kind, synthetic_brats, tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    if kind == "2d":
        model = create_model("unet2d", input_shape=(32, 32, 2), num_classes=4, filters=2)
        spec = InferenceSpec.for_slices(SLICES, model="unet2d")
    else:
        model = create_model("unet3d_simple", input_shape=(32, 32, 32, 3), filters=2)
        spec = InferenceSpec.for_volume(VOLUME, model="unet3d_simple")
    export_model(model, tmp_path / "m" / "model.keras", None, spec)
    case_dir = synthetic_brats / "BraTS20_Training_004"
    assert main(["predict", "--model", str(tmp_path / "m" / "model.keras"), "--data-dir", str(case_dir),
                 "--out", str(tmp_path / "o")]) == 0
    written = nib.load(str(tmp_path / "o" / "BraTS20_Training_004.nii.gz"))
    assert written.shape == TINY_SHAPE and set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 4}
    case = load_case(discover_cases(synthetic_brats)[3], spec.modalities, with_label=False)
    if kind == "2d":
        expected = predict_volume_2d(model.predict_on_batch, case, SLICES, slices="all", skip_empty=True,
                                     batch_size=64)  # one batch: one compilation
    else:
        expected = predict_volume_3d(model.predict_on_batch, case, VOLUME, (32, 32, 32), batch_size=8)
    assert np.mean(np.asarray(written.dataobj) == expected) > 0.999


def test_spec_round_trips_and_rejects_nonsense():
    spec = InferenceSpec.for_volume(VOLUME, experiment="e", model="m", synthetic=True)
    assert InferenceSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    two_d = InferenceSpec.for_slices(SLICES)
    assert InferenceSpec.from_json(two_d.to_json()) == two_d and two_d.modalities == ("flair", "t1ce")
    with pytest.raises(ValueError, match="format"):
        InferenceSpec.from_json({"format": 99})
    with pytest.raises(ValueError, match="own settings"):
        InferenceSpec("slices2d", volume=VOLUME)
    with pytest.raises(ValueError, match="neither"):
        InferenceSpec.from_run_config({"data": {}})
    paper2 = InferenceSpec.from_run_config(config_to_dict(paper2_config(quick=True)), model="unet3d_simple")
    assert paper2.kind == "volume3d" and paper2.volume.crop == QUICK_CROP and paper2.synthetic
    assert paper2.modalities == ("flair", "t1ce", "t2") and paper2.experiment == "paper2_attention_unet3d"

