"""Tests of the model registry (brats_keras.models.registry). Backend-agnostic, no TensorFlow import."""

from __future__ import annotations

import keras
import pytest

from brats_keras.errors import BratsKerasError
from brats_keras.models import (
    RegistryError,
    create_model,
    get_model_builder,
    is_model,
    list_models,
    register_model,
    registered_model,
    unregister_model,
)

pytestmark = pytest.mark.backend_agnostic


def tiny_dense(in_channels=3, num_classes=2, name="tiny_dense"):
    inputs = keras.Input((in_channels,))
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(inputs), name=name)


def test_create_with_defaults_and_overrides():
    with registered_model("test_tiny_dense", tiny_dense):
        assert is_model("test_tiny_dense")
        assert get_model_builder("test_tiny_dense") is tiny_dense
        default = create_model("test_tiny_dense")
        assert default.input_shape == (None, 3) and default.output_shape == (None, 2)
        custom = create_model("test_tiny_dense", in_channels=5, num_classes=4, name="custom")
        assert custom.input_shape == (None, 5) and custom.output_shape == (None, 4) and custom.name == "custom"
    assert not is_model("test_tiny_dense")  # the context manager cleaned up


def test_list_models_sorted_and_filtered():
    with registered_model("test_unet_b", tiny_dense), registered_model("test_unet_a", tiny_dense), \
            registered_model("test_classifier", tiny_dense):
        names = list_models()
        assert names == sorted(names)
        assert {"test_unet_a", "test_unet_b", "test_classifier"} <= set(names)
        assert list_models("test_unet*") == ["test_unet_a", "test_unet_b"]
        assert list_models("test_*classifier") == ["test_classifier"]
        assert list_models("no_such_*") == []
    assert not set(list_models("test_*")) & {"test_unet_a", "test_unet_b", "test_classifier"}


def test_unknown_name_lists_valid_names_and_suggests_the_closest():
    with registered_model("test_resunet", tiny_dense), registered_model("test_unet3d", tiny_dense):
        with pytest.raises(RegistryError) as info:
            create_model("test_resunt")
        message = str(info.value)
        assert "'test_resunt'" in message
        assert "Did you mean 'test_resunet'?" in message
        for name in list_models():
            assert name in message
        with pytest.raises(ValueError, match="Registered models: .*test_unet3d"):
            get_model_builder("completely_different")


def test_registry_error_is_value_error_and_package_error():
    assert issubclass(RegistryError, ValueError) and issubclass(RegistryError, BratsKerasError)


def test_duplicate_registration_raises_and_keeps_the_first_builder():
    def other_builder():
        return tiny_dense(num_classes=7)

    with registered_model("test_dup", tiny_dense):
        with pytest.raises(RegistryError, match="already registered.*tiny_dense"):
            register_model("test_dup")(other_builder)
        assert get_model_builder("test_dup") is tiny_dense
        assert create_model("test_dup").output_shape == (None, 2)


def test_bare_decorator_uses_the_function_name_and_unregister():
    @register_model
    def test_bare_builder(num_classes=3):
        return tiny_dense(num_classes=num_classes)

    try:
        assert is_model("test_bare_builder")
        assert create_model("test_bare_builder").output_shape == (None, 3)
    finally:
        assert unregister_model("test_bare_builder") is test_bare_builder
    assert not is_model("test_bare_builder")
    with pytest.raises(RegistryError, match="unknown model"):
        unregister_model("test_bare_builder")


def test_override_the_builder_does_not_take_is_named():
    with registered_model("test_strict", tiny_dense):
        with pytest.raises(RegistryError, match=r"does not accept 'filterz'.*in_channels, num_classes, name"):
            create_model("test_strict", filterz=8)


def test_builder_with_var_kwargs_receives_everything():
    seen = {}

    def flexible(**kwargs):
        seen.update(kwargs)
        return tiny_dense()

    with registered_model("test_flexible", flexible):
        create_model("test_flexible", anything=1, filters=16)
    assert seen == {"anything": 1, "filters": 16}


def test_builder_must_return_a_keras_model():
    with registered_model("test_not_a_model", lambda: "oops"):
        with pytest.raises(RegistryError, match="returned str, not a keras.Model"):
            create_model("test_not_a_model")


@pytest.mark.parametrize("bad", ["", "  ", " padded", 3])
def test_bad_names_are_rejected(bad):
    with pytest.raises(RegistryError, match="model name"):
        register_model(bad)(tiny_dense)
    assert bad not in list_models()


def test_registered_model_cleans_up_after_an_exception():
    with pytest.raises(RuntimeError):
        with registered_model("test_exploding", tiny_dense):
            raise RuntimeError("boom")
    assert not is_model("test_exploding")
