"""brats_keras: Keras 3 replications of five brain-tumour MRI papers on shared building blocks.

Importing the package first hides TensorFlow's CUDA start-up noise on a machine without an NVIDIA
GPU (:func:`brats_keras.runtime.quiet_tensorflow_startup`; it imports no TensorFlow itself).
"""

__version__ = "0.1.0"

from brats_keras.runtime import quiet_tensorflow_startup  # noqa: E402

quiet_tensorflow_startup()

from brats_keras.errors import BratsKerasError, DataError  # noqa: E402

__all__ = ["BratsKerasError", "DataError", "__version__", "quiet_tensorflow_startup"]
