"""A whitened first layer: the stem convolution initialised from the training images.

The speed-run records of CIFAR-10 (Keller Jordan's airbench, tysam-code's hlb-CIFAR10) start
their nets with a convolution whose filters whiten the image's k×k patches: the eigenvectors of
the patch covariance, each scaled by ``1/sqrt(eigenvalue + eps)`` and used with both signs, so
that every direction of colour and texture reaches the next layer at the same scale from the
first step. :func:`patch_whitening` computes those filters in numpy from a sample of the
training images (normalised as the loader normalises them); :func:`whiten_first_conv` writes
them into a model's stem through the backend's neutral state (``get_state``/``set_state``), so
the three backends start from the same numbers. The filters are an initialisation: they keep
training with the rest of the net (freezing them learnt less on the hard demo,
docs/recipes.md).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: the stem convolution of each model that has one to whiten (canonical parameter name)
FIRST_CONV = {"resnet18": "conv1", "airbench94": "whiten"}
#: training images the filters are computed from (a seeded sample when the set is larger):
#: airbench94 uses 5,000, its own count; the ResNet-18 stem 1,024
WHITEN_IMAGES = {"resnet18": 1024, "airbench94": 5000}


def patch_whitening(images: np.ndarray, mean: Sequence[float], std: Sequence[float],
                    kernel: int = 3, n_filters: int = 64, eps: float = 5e-4,
                    max_images: int = 1024, seed: int = 0) -> np.ndarray:
    """Whitening filters (F×C×k×k float32, ``F ≤ n_filters``) of the k×k patches of
    ``images`` (N×H×W×C uint8), normalised with ``mean``/``std`` as the loader does.

    The patch covariance's eigenvectors, largest eigenvalue first, each scaled by
    ``1/sqrt(eigenvalue + eps)`` and stacked as ``[+v..., −v...]`` (ReLU keeps both signs of
    an edge); ``min(C·k·k, n_filters // 2)`` pairs. At most ``max_images`` images (a seeded
    sample) are read. Each eigenvector's sign is fixed (its largest component positive), so
    numpy's and torch's LAPACK give the same filters (they may return either sign).
    """
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != len(mean):
        raise ValueError(f"patch_whitening: expected N×H×W×{len(mean)} images, got {x.shape}")
    if x.shape[1] < kernel or x.shape[2] < kernel:
        raise ValueError(f"patch_whitening: images of {x.shape[1]}×{x.shape[2]} px have no "
                         f"{kernel}×{kernel} patch")
    if len(x) > max_images:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_images, replace=False))]
    c = x.shape[-1]
    d = c * kernel * kernel
    cov = np.zeros((d, d))
    n = 0
    m, s = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    for i in range(0, len(x), 128):   # chunks: all patches of 1,024 images would be ~200 MB
        z = (x[i:i + 128].astype(np.float64) / 255.0 - m) / s
        # N×(H-k+1)×(W-k+1)×C×k×k windows: one row per patch, in a conv weight's C×k×k order
        p = np.lib.stride_tricks.sliding_window_view(z, (kernel, kernel), axis=(1, 2))
        p = p.reshape(-1, d)
        cov += p.T @ p
        n += len(p)
    values, vectors = np.linalg.eigh(cov / n)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
    big = np.argmax(np.abs(vectors), axis=0)
    vectors = vectors * np.sign(vectors[big, np.arange(d)])
    pairs = min(d, n_filters // 2)
    filt = (vectors[:, :pairs] / np.sqrt(values[:pairs] + eps)).T.reshape(pairs, c, kernel, kernel)
    return np.concatenate([filt, -filt]).astype(np.float32)


def whiten_first_conv(backend: Any, net: Any, model: str, images: np.ndarray,
                      mean: Sequence[float], std: Sequence[float], eps: float = 5e-4,
                      seed: int = 0, max_images: int | None = None) -> int:
    """Initialise ``net``'s stem convolution (``model`` names it, :data:`FIRST_CONV`) with
    :func:`patch_whitening` filters of ``images``; the filters beyond them keep their random
    initialisation, whitened filters start with a zero bias. Returns how many filters were set.
    The chapters' step "define the model", with the speed-runs' first layer."""
    if model not in FIRST_CONV:
        raise ValueError(f"a whitened first layer is defined for {', '.join(FIRST_CONV)}, "
                         f"not {model!r}")
    name = FIRST_CONV[model]
    state = backend.get_state(net)
    w = state[f"{name}.weight"]
    filt = patch_whitening(images, mean, std, kernel=w.shape[-1], n_filters=w.shape[0], eps=eps,
                           seed=seed, max_images=max_images or WHITEN_IMAGES.get(model, 1024))
    if filt.shape[1:] != w.shape[1:]:
        raise ValueError(f"whitening filters {filt.shape[1:]} do not fit {name}.weight {w.shape}")
    new = {f"{name}.weight": np.concatenate([filt, w[len(filt):]]).astype(w.dtype)}
    if f"{name}.bias" in state:
        b = state[f"{name}.bias"]
        new[f"{name}.bias"] = np.concatenate([np.zeros(len(filt), b.dtype), b[len(filt):]])
    backend.set_state(net, new, source="whitening",
                      allow_missing=tuple(k for k in state if k not in new))
    return len(filt)
