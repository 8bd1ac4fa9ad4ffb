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

# Paper modules register their builders on import (keep these after the registry import).
from brats_keras.models import paper1  # noqa: E402,F401  (registers unet2d, resunet2d, u_resunet)
from brats_keras.models import paper2  # noqa: E402,F401  (registers unet3d_simple, unet3d_modified, unet3d_spatial_attention)
from brats_keras.models import paper3  # noqa: E402,F401  (registers unet2d_multimodal)
from brats_keras.models import paper4  # noqa: E402,F401  (registers unet2d_binary, attention_unet2d, res_attention_unet2d, efficientnet_attention_unet, lstm_effunet)
from brats_keras.models import enhancer  # noqa: E402,F401  (registers lstm_enhancer)
from brats_keras.models import paper5  # noqa: E402,F401  (registers efficientnet_b1_classifier, residual_unet2d_binary)

# A compiled model's .keras file names our losses and metrics too: importing them here means
# `import brats_keras.models` is all keras.models.load_model needs (no custom_objects).
from brats_keras import losses, metrics  # noqa: E402,F401

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
