"""Image augmentation in numpy + Pillow, seeded: the chapters' transform recipes.

Every transform is a callable ``t(image, rng) -> image`` on an H×W×3 uint8 array, where
``rng`` is a :class:`numpy.random.Generator`. Given the same generator state the output is
the same bytes in every backend, which is what lets the parity tests compare frameworks.
Normalisation (mean/std) is left to the backend, which converts uint8 batches to tensors.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from PIL import Image

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# AlexNet-style PCA lighting noise on 0..255 pixels (the values Gluon's RandomLighting uses).
_EIGVAL = np.array([55.46, 4.794, 1.148])
_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                    [-0.5808, -0.0045, -0.8140],
                    [-0.5836, -0.6948, 0.4203]])


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for t in self.transforms:
            img = t(img, rng)
        return img

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


def _resize(img: np.ndarray, width: int, height: int,
            box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    pil = Image.fromarray(img)
    return np.asarray(pil.resize((int(width), int(height)), Image.BILINEAR, box=box))


class Resize:
    """Resize the shorter side to ``size`` keeping the aspect ratio (torchvision's Resize(int))."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, img, rng=None):
        h, w = img.shape[:2]
        if min(h, w) == self.size:
            return img
        if h <= w:
            nh, nw = self.size, int(round(self.size * w / h))
        else:
            nh, nw = int(round(self.size * h / w)), self.size
        return _resize(img, nw, nh)

    def __repr__(self):
        return f"Resize({self.size})"


class CenterCrop:
    """Crop the central ``size``×``size`` square (padding is never needed after Resize)."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, img, rng=None):
        h, w = img.shape[:2]
        s = self.size
        if h < s or w < s:
            img = Resize(s)(img)
            h, w = img.shape[:2]
        top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        return img[top:top + s, left:left + s]

    def __repr__(self):
        return f"CenterCrop({self.size})"


class RandomResizedCrop:
    """Crop a random area fraction ``scale`` with aspect ``ratio``, resize to ``size``².

    Same sampling rule as torchvision (10 tries, then a clamped central crop).
    """

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)

    def box(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        area = h * w
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(self.scale[0], self.scale[1])
            aspect = math.exp(rng.uniform(log_r[0], log_r[1]))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(rng.integers(0, h - ch + 1))
                left = int(rng.integers(0, w - cw + 1))
                return top, left, ch, cw
        in_ratio = w / h
        if in_ratio < min(self.ratio):
            cw, ch = w, int(round(w / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            ch, cw = h, int(round(h * max(self.ratio)))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def __call__(self, img, rng):
        top, left, ch, cw = self.box(img.shape[0], img.shape[1], rng)
        return _resize(img, self.size, self.size, box=(left, top, left + cw, top + ch))

    def __repr__(self):
        return f"RandomResizedCrop({self.size}, scale={self.scale}, ratio={self.ratio})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, img, rng):
        return img[:, ::-1] if rng.random() < self.p else img

    def __repr__(self):
        return f"RandomHorizontalFlip({self.p})"


def _grey(x: np.ndarray) -> np.ndarray:
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


class ColorJitter:
    """Random brightness, contrast and saturation factors in ``[1-v, 1+v]``, random order."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0):
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def __call__(self, img, rng):
        x = img.astype(np.float32)
        for k in rng.permutation(3):
            v = (self.brightness, self.contrast, self.saturation)[k]
            if v <= 0:
                continue
            f = rng.uniform(max(0.0, 1 - v), 1 + v)
            if k == 0:
                x = x * f
            elif k == 1:
                x = (x - _grey(x).mean()) * f + _grey(x).mean()
            else:
                g = _grey(x)[..., None]
                x = (x - g) * f + g
            x = np.clip(x, 0, 255)
        return x.round().astype(np.uint8)

    def __repr__(self):
        return f"ColorJitter({self.brightness}, {self.contrast}, {self.saturation})"


class Lighting:
    """AlexNet PCA lighting noise with standard deviation ``alphastd`` (Gluon's RandomLighting)."""

    def __init__(self, alphastd: float = 0.1):
        self.alphastd = float(alphastd)

    def __call__(self, img, rng):
        if self.alphastd <= 0:
            return img
        alpha = rng.normal(0, self.alphastd, size=3)
        rgb = _EIGVEC @ (alpha * _EIGVAL)
        return np.clip(img.astype(np.float32) + rgb.astype(np.float32), 0, 255).round().astype(np.uint8)

    def __repr__(self):
        return f"Lighting({self.alphastd})"


def cifar_train(size: int = 32) -> Compose:
    """CIFAR-10 chapter, training: Resize 40 → RandomResizedCrop 32 (0.64–1, ratio 1) → flip."""
    return Compose([Resize(int(round(size * 40 / 32))),
                    RandomResizedCrop(size, scale=(0.64, 1.0), ratio=(1.0, 1.0)),
                    RandomHorizontalFlip()])


def cifar_test(size: int = 32) -> Compose:
    """CIFAR-10 chapter, testing: nothing but normalisation (a resize if ``size`` differs)."""
    return Compose([Resize(size), CenterCrop(size)])


def dog_train(size: int = 224) -> Compose:
    """Dog Breed chapter, training: RandomResizedCrop → flip → ColorJitter(0.4) → lighting 0.1."""
    return Compose([RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
                    RandomHorizontalFlip(),
                    ColorJitter(0.4, 0.4, 0.4),
                    Lighting(0.1)])


def dog_test(size: int = 224) -> Compose:
    """Dog Breed chapter, testing: Resize 256 → CenterCrop 224 (scaled with ``size``)."""
    return Compose([Resize(int(round(size * 256 / 224))), CenterCrop(size)])


RECIPES: dict[str, tuple[Callable[[int], Compose], Callable[[int], Compose]]] = {
    "cifar": (cifar_train, cifar_test),
    "dog": (dog_train, dog_test),
}


def get_transforms(name: str, size: int) -> tuple[Compose, Compose]:
    """(train, test) transforms of the recipe ``name`` at image size ``size``."""
    if name not in RECIPES:
        raise ValueError(f"unknown augmentation recipe {name!r}; choose from {sorted(RECIPES)}")
    train, test = RECIPES[name]
    return train(size), test(size)


def normalize_nchw(x: np.ndarray, mean: Sequence[float], std: Sequence[float],
                   dtype: str | np.dtype = np.float32) -> np.ndarray:
    """The chapters' ``Normalize`` in numpy: N×H×W×3 uint8 → contiguous N×3×H×W ``dtype``.

    ``(x/255 − mean)/std`` folded into one multiply-add, computed in ``dtype`` itself (so a
    float64 run is float64 from the pixels on); the MXNet and Paddle backends convert with it,
    and every backend uses it for float64 steps, so those inputs are the same bits everywhere.
    """
    dt = np.dtype(dtype)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected an N×H×W×3 batch, got shape {x.shape}")
    s = np.asarray(std, dtype=dt)
    xf = np.asarray(x, dtype=dt) * (1.0 / (255.0 * s)).astype(dt) - (np.asarray(mean, dtype=dt) / s)
    return np.ascontiguousarray(xf.transpose(0, 3, 1, 2))
