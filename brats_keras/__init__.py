"""brats_keras: Keras 3 replications of five brain-tumour MRI papers on shared building blocks."""

__version__ = "0.1.0"

from brats_keras.errors import BratsKerasError, DataError  # noqa: E402

__all__ = ["BratsKerasError", "DataError", "__version__"]
