"""A name → builder registry for models, in the style of timm's ``_registry.py``.

A model module registers its builders at import time::

    @register_model("u_resunet")
    def u_resunet(input_shape=(128, 128, 2), num_classes=4, filters=32, name="u_resunet") -> keras.Model:
        ...

and experiments build models by name, overriding any keyword argument of the builder::

    model = create_model("u_resunet", filters=16, name="u_resunet_small")
    list_models("unet*")        # ['unet', 'unet3d', ...]

An unknown name, a name registered twice, or an override the builder does not accept raises
``RegistryError`` (a ``ValueError`` and a ``BratsKerasError``, so CLIs print it as one line).
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterator

import keras

from brats_keras.errors import BratsKerasError

Builder = Callable[..., keras.Model]

_REGISTRY: dict[str, Builder] = {}


class RegistryError(BratsKerasError, ValueError):
    """Unknown model name, duplicate registration or an override the builder does not accept."""


def _check_name(name) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise RegistryError(f"model name must be a non-empty string without surrounding spaces, got {name!r}")
    return name


def _unknown_name_message(name: str) -> str:
    names = sorted(_REGISTRY)
    if not names:
        return f"unknown model {name!r}: no models are registered"
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown model {name!r}.{hint} Registered models: {', '.join(names)}"


def register_model(name: str | Builder | None = None):
    """Decorator registering a builder ``builder(**kwargs) -> keras.Model`` under ``name``.

    ``@register_model("u_resunet")`` registers under the given name; a bare ``@register_model``
    or ``@register_model()`` uses the function's ``__name__`` (as timm does). The decorator returns
    the builder unchanged. Registering a name that is already taken raises ``RegistryError``
    naming the builder that holds it.
    """
    if callable(name):  # bare @register_model
        return register_model(None)(name)

    def decorator(builder: Builder) -> Builder:
        if not callable(builder):
            raise RegistryError(f"register_model expects a callable builder, got {builder!r}")
        key = _check_name(builder.__name__ if name is None else name)
        if key in _REGISTRY:
            holder = _REGISTRY[key]
            raise RegistryError(
                f"model {key!r} is already registered by {holder.__module__}.{holder.__qualname__}"
            )
        _REGISTRY[key] = builder
        return builder

    return decorator


def unregister_model(name: str) -> Builder:
    """Remove ``name`` from the registry and return its builder (tests and interactive use)."""
    if name not in _REGISTRY:
        raise RegistryError(_unknown_name_message(name))
    return _REGISTRY.pop(name)


@contextlib.contextmanager
def registered_model(name: str, builder: Builder) -> Iterator[Builder]:
    """Register ``builder`` under ``name`` for the duration of a ``with`` block, then remove it."""
    register_model(name)(builder)
    try:
        yield builder
    finally:
        _REGISTRY.pop(name, None)


def is_model(name: str) -> bool:
    """Whether ``name`` is registered."""
    return name in _REGISTRY


def get_model_builder(name: str) -> Builder:
    """The builder registered under ``name``; ``RegistryError`` listing the valid names if none."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise RegistryError(_unknown_name_message(name)) from None


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted; ``pattern`` is a shell-style wildcard (``"unet*"``, ``"*3d"``)."""
    names = sorted(_REGISTRY)
    if pattern is None:
        return names
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def _check_overrides(name: str, builder: Builder, overrides: dict) -> None:
    """Raise ``RegistryError`` for overrides the builder's signature cannot take."""
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     inspect.Parameter.KEYWORD_ONLY)]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise RegistryError(
            f"model {name!r} does not accept {', '.join(map(repr, unknown))}; "
            f"its arguments are: {', '.join(accepted) or '(none)'}"
        )


def check_model_options(model_name: str, options: dict) -> None:
    """Raise ``RegistryError`` if the builder registered under ``model_name`` cannot take ``options``
    (an unknown keyword, named with the accepted ones); nothing is built. An unregistered name passes:
    it is checked when the model is created."""
    if model_name in _REGISTRY:
        _check_overrides(model_name, _REGISTRY[model_name], options)


def create_model(model_name: str, /, **overrides) -> keras.Model:
    """Build the model registered under ``model_name``, passing ``overrides`` to its builder.

    ``model_name`` is positional-only so that ``name`` (the Keras model's name, part of every
    builder's vocabulary) can be overridden too: ``create_model("unet", name="unet_small")``.

    Raises ``RegistryError`` if the name is unknown (the message lists the registered names and
    suggests the closest one), if an override is not an argument of the builder, or if the builder
    does not return a ``keras.Model``.
    """
    builder = get_model_builder(model_name)
    _check_overrides(model_name, builder, overrides)
    model = builder(**overrides)
    if not isinstance(model, keras.Model):
        raise RegistryError(f"builder of model {model_name!r} returned {type(model).__name__}, not a keras.Model")
    return model
