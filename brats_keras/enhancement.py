"""Denoising pre-training of paper 4's LSTM enhancer: MRI-like noise, RMSprop training, PSNR report.

Paper: ``shared/papers/003_3777ada94496fdc3.txt``, §3.1: the sequential LSTM is trained with RMSprop
for "noise reduction" (and spatial coherence, intensity normalisation) before the U-Net.
REPLICATION.md (paper 4, choices): pre-train the enhancer as a denoiser on noise-corrupted inputs,
then fine-tune it end to end with the U-Net (the experiment does that; this module gives the pieces).

- :class:`NoiseSettings` / :func:`corrupt`: Rician (magnitude MRI) or Gaussian noise whose standard
  deviation is a fraction of each image's robust maximum, the fraction drawn per image;
- :class:`DenoisingPairs`: a ``keras.utils.PyDataset`` of ``(noisy, clean)`` batches, fresh noise
  every epoch, seeded (order-independent: batch ``i`` of epoch ``e`` always gets the same noise);
- :func:`pretrain_enhancer`: RMSprop + MSE on those pairs;
- :func:`denoising_report`: MSE / PSNR of the noisy input and of the enhanced output vs the clean image.

Images are float ``(N, H, W, C)`` slices (or ``(N, H, W, D, C)`` volumes) normalised to [0, 1].
Keras + NumPy only: runs on every Keras backend.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import keras
import numpy as np

from brats_keras.callbacks import fit_progress

__all__ = [
    "NOISE_KINDS",
    "DenoisingPairs",
    "NoiseSettings",
    "corrupt",
    "denoising_report",
    "pretrain_enhancer",
    "psnr",
    "robust_max",
]

NOISE_KINDS = ("rician", "gaussian")
_VAL_STREAM = 2**31 - 1  # tags the validation noise stream apart from the epochs' streams


@dataclass(frozen=True)
class NoiseSettings:
    """The noise the enhancer learns to remove (paper 4 names none: REPLICATION.md choice)."""

    kind: str = "rician"
    """``"rician"``: magnitude of a complex signal with Gaussian noise on both channels,
    ``sqrt((x + σ n₁)² + (σ n₂)²)`` — the noise of magnitude MR images (background biased up by
    ≈ 1.25 σ); ``"gaussian"``: ``x + σ n``."""
    sigma: tuple[float, float] = (0.03, 0.08)
    """Range of the noise standard deviation as a fraction of the image's robust maximum; each image
    draws its fraction uniformly from it (3–8 %: clinical MR magnitude images' SNR of roughly 12–35
    relative to bright tissue). A single number fixes the fraction."""
    robust_percentile: float = 99.5
    """Percentile of an image channel's intensities taken as its "robust maximum" (ignores a few hot
    pixels); an all-zero channel uses 1, the full [0, 1] range."""
    seed: int = 0
    """Base seed: :func:`corrupt` without ``rng`` draws from it; the training and report streams mix it in."""

    def __post_init__(self):
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"kind: {self.kind!r} not in {NOISE_KINDS}")
        sigma = self.sigma
        if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
            sigma = (sigma, sigma)
        try:
            low, high = (float(s) for s in sigma)
        except (TypeError, ValueError):
            raise ValueError(f"sigma: need a fraction or a (low, high) pair of fractions, got {self.sigma!r}") from None
        if not (0.0 <= low <= high) or not math.isfinite(high):
            raise ValueError(f"sigma: need 0 <= low <= high (finite), got {self.sigma!r}")
        object.__setattr__(self, "sigma", (low, high))
        if isinstance(self.robust_percentile, bool) or not 0.0 < float(self.robust_percentile) <= 100.0:
            raise ValueError(f"robust_percentile: need a percentile in (0, 100], got {self.robust_percentile!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: need a non-negative integer, got {self.seed!r}")

    def to_dict(self) -> dict:
        """JSON-ready fields (``sigma`` as a list)."""
        d = asdict(self)
        d["sigma"] = list(self.sigma)
        return d


def _check_images(images, name: str = "images") -> np.ndarray:
    """``images`` as float32 ``(N, *spatial, C)`` (rank 4 or 5) with values in [0, 1]."""
    x = np.asarray(images)
    if x.ndim not in (4, 5) or x.shape[0] < 1:
        raise ValueError(f"{name} must be (N, H, W, C) slices or (N, H, W, D, C) volumes, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be floating point images normalised to [0, 1], got dtype {x.dtype}")
    x = x.astype("float32", copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} hold NaN or infinite values")
    low, high = float(x.min()), float(x.max())
    if low < -1e-6 or high > 1.0 + 1e-6:
        raise ValueError(f"{name} must be normalised to [0, 1], got values in [{low:.4g}, {high:.4g}]")
    return x


def robust_max(images: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Per image and channel robust maximum, shape ``(N, 1, ..., 1, C)``; 1 where a channel is all zero."""
    x = np.asarray(images, dtype="float32")
    axes = tuple(range(1, x.ndim - 1))
    flat = np.moveaxis(x, -1, 1).reshape(x.shape[0], x.shape[-1], -1)
    scale = np.percentile(flat, percentile, axis=-1)  # (N, C)
    peak = flat.max(axis=-1)
    scale = np.where(scale > 0, scale, np.where(peak > 0, peak, 1.0)).astype("float32")
    return np.expand_dims(scale, axes)


def corrupt(images, settings: NoiseSettings, rng: np.random.Generator | None = None) -> np.ndarray:
    """Noisy copies of ``images`` (float32 ``(N, H, W, C)`` or ``(N, H, W, D, C)`` in [0, 1]).

    Each image draws a fraction ``s ~ U(settings.sigma)``; channel ``c`` gets noise of standard
    deviation ``s · robust_max(image[..., c])`` (Rician or Gaussian, see :class:`NoiseSettings`).
    The result is not clipped (Rician values are ≥ 0 and may exceed 1 slightly). ``rng`` defaults to
    ``np.random.default_rng(settings.seed)``.
    """
    if not isinstance(settings, NoiseSettings):
        raise TypeError(f"settings must be a NoiseSettings, got {type(settings).__name__}")
    x = _check_images(images)
    rng = np.random.default_rng(settings.seed) if rng is None else rng
    low, high = settings.sigma
    fraction = rng.uniform(low, high, size=(x.shape[0],) + (1,) * (x.ndim - 1)).astype("float32")
    sigma = fraction * robust_max(x, settings.robust_percentile)
    real = x + sigma * rng.standard_normal(x.shape, dtype="float32")
    if settings.kind == "gaussian":
        return real
    imaginary = sigma * rng.standard_normal(x.shape, dtype="float32")
    return np.sqrt(real * real + imaginary * imaginary)


class DenoisingPairs(keras.utils.PyDataset):
    """``(corrupt(clean), clean)`` batches with fresh, seeded noise every epoch.

    Epoch ``e`` visits the images in the order ``default_rng([seed, e]).permutation(N)`` (or in order
    with ``shuffle=False``); batch ``i`` of epoch ``e`` is corrupted with
    ``default_rng([noise.seed, seed, e, i])``, so a batch's noise does not depend on which batches
    were drawn before it. The epoch counter advances in ``on_epoch_end`` (Keras calls it).
    """

    def __init__(self, clean, noise: NoiseSettings, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.clean = _check_images(clean, "clean")
        if not isinstance(noise, NoiseSettings):
            raise TypeError(f"noise must be a NoiseSettings, got {type(noise).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.noise, self.batch_size, self.seed, self.shuffle = noise, batch_size, int(seed), bool(shuffle)
        self.epoch = 0
        self._order = None

    def __len__(self):
        return math.ceil(len(self.clean) / self.batch_size)

    def order(self) -> np.ndarray:
        """Image indices of the current epoch, in visiting order."""
        if self._order is None:
            n = len(self.clean)
            self._order = (np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle
                           else np.arange(n))
        return self._order

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range for {len(self)} batches")
        picked = np.sort(self.order()[index * self.batch_size:(index + 1) * self.batch_size])
        clean = self.clean[picked]
        rng = np.random.default_rng([self.noise.seed, self.seed, self.epoch, index])
        return corrupt(clean, self.noise, rng), clean

    def on_epoch_end(self):
        self.epoch += 1
        self._order = None


def pretrain_enhancer(model: keras.Model, clean_train, clean_val=None, *, noise: NoiseSettings, epochs: int,
                      batch_size: int, learning_rate: float = 1e-3, seed: int = 0, verbose=None,
                      callbacks=None) -> dict:
    """Pre-train an enhancer (e.g. ``create_model("lstm_enhancer")``) as a denoiser; return the history.

    Compiles ``model`` with ``keras.optimizers.RMSprop(learning_rate)`` (paper 4: RMSprop) and the
    mean squared error, then fits it on :class:`DenoisingPairs` of ``clean_train`` (fresh noise every
    epoch) for ``epochs`` epochs. ``clean_val`` (optional) is corrupted once, with the stream
    ``default_rng([noise.seed, seed, 2**31 - 1])``, so ``val_loss`` is comparable between epochs.

    Args:
        model: maps ``(batch, *S, C)`` images to images of the same shape.
        clean_train, clean_val: float ``(N, H, W, C)`` (or ``(N, H, W, D, C)``) images in [0, 1].
        noise: the corruption (:class:`NoiseSettings`).
        epochs, batch_size: as ``model.fit``.
        learning_rate: RMSprop's learning rate.
        seed: seeds the order of the images and, with ``noise.seed``, every batch's noise.
        verbose: as ``model.fit``; ``None`` (default): a progress bar on a terminal, one line per
            epoch in a log file (:func:`brats_keras.callbacks.fit_progress`).
        callbacks: passed to ``model.fit`` (checkpointing, logging).

    Returns:
        ``history.history``: ``{"loss": [...], "val_loss": [...]}`` (plain floats, one per epoch).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    train = DenoisingPairs(clean_train, noise, batch_size, seed=seed)
    validation = None
    if clean_val is not None:
        clean_val = _check_images(clean_val, "clean_val")
        noisy_val = corrupt(clean_val, noise, np.random.default_rng([noise.seed, seed, _VAL_STREAM]))
        validation = (noisy_val, clean_val)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate), loss="mse")
    verbose, shown = fit_progress(callbacks or (), verbose)
    history = model.fit(train, validation_data=validation, validation_batch_size=batch_size, epochs=epochs,
                        verbose=verbose, callbacks=[*shown, *(callbacks or ())])
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def psnr(estimate, reference, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio per image, dB: ``10 log10(data_range² / MSE)`` (MSE floored at 1e-12)."""
    a, b = np.asarray(estimate, "float64"), np.asarray(reference, "float64")
    mse = np.mean((a - b) ** 2, axis=tuple(range(1, a.ndim)))
    return 10.0 * np.log10(data_range**2 / np.maximum(mse, 1e-12))


def denoising_report(model: keras.Model, clean, *, noise: NoiseSettings, seed: int, batch_size: int = 8) -> dict:
    """How much ``model`` denoises held-out ``clean`` images corrupted with ``noise``.

    The noise is drawn from ``default_rng([noise.seed, seed])``. PSNRs are per-image values
    (images in [0, 1], so ``data_range = 1``) averaged over the images; MSEs are over all pixels.

    Returns:
        ``{"images", "noisy_mse", "enhanced_mse", "noisy_psnr_db", "enhanced_psnr_db",
        "psnr_gain_db"}`` (floats; the gain is enhanced minus noisy PSNR).
    """
    clean = _check_images(clean, "clean")
    noisy = corrupt(clean, noise, np.random.default_rng([noise.seed, int(seed)]))
    enhanced = np.asarray(model.predict(noisy, batch_size=batch_size, verbose=0), dtype="float32")
    if enhanced.shape != clean.shape:
        raise ValueError(f"model output shape {enhanced.shape} differs from the images' {clean.shape}")
    noisy_psnr, enhanced_psnr = float(psnr(noisy, clean).mean()), float(psnr(enhanced, clean).mean())
    return {
        "images": int(clean.shape[0]),
        "noisy_mse": float(np.mean((noisy - clean) ** 2)),
        "enhanced_mse": float(np.mean((enhanced - clean) ** 2)),
        "noisy_psnr_db": noisy_psnr,
        "enhanced_psnr_db": enhanced_psnr,
        "psnr_gain_db": enhanced_psnr - noisy_psnr,
    }
