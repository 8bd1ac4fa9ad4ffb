"""Model builders and the model registry (timm style).

``create_model(name, **overrides)`` builds any registered model; ``list_models(pattern)`` lists
them. Each paper's model module registers its builders with ``@register_model(name)`` and is
imported here so that importing ``brats_keras.models`` fills the registry.
"""

from brats_keras.models.registry import (
    RegistryError,
    create_model,
    get_model_builder,
    is_model,
    list_models,
    register_model,
    registered_model,
    unregister_model,
)

__all__ = [
    "RegistryError",
    "create_model",
    "get_model_builder",
    "is_model",
    "list_models",
    "register_model",
    "registered_model",
    "unregister_model",
]
