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
import dataclasses
import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

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


BUILD_ARGUMENTS = ("input_shape", "name", "weights")
"""Builder arguments an experiment passes when it builds the model (from its data: the input shape,
the model name, resolved encoder weights), never part of a model's settings."""


class ModelSettings:
    """Base of the typed settings of one registered builder (:func:`settings_class`).

    One dataclass field per keyword argument of the builder except :data:`BUILD_ARGUMENTS`, with the
    builder's default; the field's type is the type of that default (``bool``, ``int``, ``float``,
    ``str``, ``tuple``; a ``None`` default takes any value). Making one checks every value:
    ``UResunetSettings(filters="16")`` raises ``ValueError`` naming the field.
    """

    model: ClassVar[str]
    """The registered name these are the settings of."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, _checked(self.model, f.name, f.type, getattr(self, f.name)))

    def kwargs(self) -> dict[str, Any]:
        """The builder's keyword arguments (every field)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _checked(model: str, field_name: str, kind: Any, value: Any) -> Any:
    """``value`` as a ``kind`` field takes it (a JSON list becomes a tuple, an int a float), or ``ValueError``."""
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        tuple: lambda v: isinstance(v, (list, tuple)),
    }.get(kind)
    if ok is None:
        return value
    if not ok(value):
        raise ValueError(f"{field_name} of model {model!r}: expected {kind.__name__}, got {value!r}")
    if kind is float:
        return float(value)
    if kind is tuple:
        return tuple(value)
    return value


def _field_type(default: Any) -> Any:
    for kind in (bool, int, float, str, tuple):
        if type(default) is kind:
            return kind
    return Any


_SETTINGS: dict[tuple[str, int], type[ModelSettings]] = {}


def settings_class(model_name: str) -> type[ModelSettings]:
    """The settings dataclass of the builder registered under ``model_name`` (made once, from its
    signature; a builder that takes ``**kwargs`` sets ``__signature__`` to name them). Raises
    ``RegistryError`` for an unknown name or a builder argument without a default."""
    builder = get_model_builder(model_name)
    key = (model_name, id(builder))
    if key not in _SETTINGS:
        fields = []
        for p in inspect.signature(builder).parameters.values():
            if p.name in BUILD_ARGUMENTS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            if p.default is p.empty:
                raise RegistryError(f"builder of model {model_name!r}: argument {p.name!r} has no default, so it "
                                    "cannot be a model setting")
            fields.append((p.name, _field_type(p.default), dataclasses.field(default=p.default)))
        title = "".join(part.capitalize() for part in model_name.split("_"))
        _SETTINGS[key] = dataclasses.make_dataclass(f"{title}Settings", fields, bases=(ModelSettings,),
                                                    namespace={"model": model_name})
    return _SETTINGS[key]


def model_settings(model_name: str, values: Any = None) -> ModelSettings:
    """The typed settings of ``model_name`` from a mapping of some of its fields (the others keep the
    builder's defaults), or ``values`` itself if it already is one. Raises ``RegistryError`` for an
    unknown model or field (listing the fields), ``ValueError`` for a value of the wrong type."""
    cls = settings_class(model_name)
    if isinstance(values, cls):
        return values
    if isinstance(values, ModelSettings):
        raise RegistryError(f"settings of model {values.model!r} given for model {model_name!r}")
    values = dict(values or {})
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise RegistryError(f"model {model_name!r} has no setting {', '.join(map(repr, unknown))}; "
                            f"its settings are: {', '.join(names) or '(none)'}")
    return cls(**values)


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
