"""Image augmentation in numpy + Pillow, seeded: the chapters' transform recipes.

Every transform is a callable ``t(image, rng) -> image`` on an H×W×3 uint8 array, where
``rng`` is a :class:`numpy.random.Generator`. Given the same generator state the output is
the same bytes in every backend, which is what lets the parity tests compare frameworks.
Normalisation (mean/std) is left to the backend, which converts uint8 batches to tensors.
"""
from __future__ import annotations

import functools
import math
import threading
from typing import Callable, Sequence

import numpy as np
from PIL import Image

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
#: CIFAR-10's statistics as the speed-run record normalises (airbench: the training set's
#: measured per-channel std; the book's 0.2023/0.1994/0.2010 are smaller)
AIRBENCH_MEAN = (0.4914, 0.4822, 0.4465)
AIRBENCH_STD = (0.2470, 0.2435, 0.2616)
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

    def batch(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The transforms on a whole N×H×W×3 uint8 batch of same-sized images.

        The CIFAR chapter's recipe (bilinear ``Resize`` → ``RandomResizedCrop`` → optional
        ``RandomHorizontalFlip``) runs vectorised: per image one box (drawn by the same rule,
        in image order) and one coin, then resize, crop and flip folded into one bilinear
        matrix per axis and applied to the batch with two batched products (no intermediate
        rounding, so bytes may differ by ±1 from the image-by-image path). Any other list
        runs image by image, drawing from ``rng`` exactly as calling it on each image in turn.
        """
        fused = _fused_recipe(self.transforms)
        if fused is None or x.ndim != 4 or len(x) == 0:
            return np.stack([self(img, rng) for img in x])
        resize, crop, flip = fused
        n, h, w = x.shape[:3]
        rh, rw = resize.out_size(h, w)
        boxes = crop.boxes(rh, rw, n, rng).tolist()
        flips = rng.random(n) < flip.p if flip is not None else np.zeros(n, bool)
        return _resize_crop_flip(x, (rh, rw), crop.size, boxes, flips)

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


@functools.lru_cache(maxsize=4096)
def _bilinear_weights(in_size: int, out_size: int, lo: float, hi: float) -> np.ndarray:
    """``out_size``×``in_size`` weights of Pillow's bilinear resampling of ``[lo, hi)`` of an
    axis (its ``precompute_coeffs``: a triangle widened by the downscale factor, the window
    clipped at the image border, rows normalised)."""
    scale = (hi - lo) / out_size
    fscale = max(scale, 1.0)
    center = lo + (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - fscale + 0.5), 0)  # C's (int) truncates
    xmax = np.minimum(np.trunc(center + fscale + 0.5), in_size)
    j = np.arange(in_size)[None, :]
    wgt = np.clip(1.0 - np.abs((j - center[:, None] + 0.5) / fscale), 0.0, None)
    wgt *= (j >= xmin[:, None]) & (j < xmax[:, None])
    total = wgt.sum(axis=1, keepdims=True)
    return wgt / np.where(total == 0, 1.0, total)


@functools.lru_cache(maxsize=8192)
def _axis_matrix(in_size: int, mid_size: int, out_size: int, lo: int, length: int,
                 flip: bool) -> np.ndarray:
    """Resize ``in_size`` → ``mid_size``, crop ``[lo, lo+length)``, resize to ``out_size``
    (and mirror) as one ``out_size``×``in_size`` float32 matrix."""
    m = _bilinear_weights(mid_size, out_size, float(lo), float(lo + length)) @ \
        _bilinear_weights(in_size, mid_size, 0.0, float(in_size))
    return np.ascontiguousarray(m[::-1] if flip else m, dtype=np.float32)


#: per-thread scratch arrays of the batch recipe, reused batch after batch (see below)
_scratch = threading.local()


def _buffer(name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """This thread's scratch array ``name`` of ``shape`` (made again only when it changes).

    A fresh float32 batch temporary is over glibc's mmap threshold, so every new one is
    mapped, page-faulted in and unmapped again: with fresh temporaries a batch of 128 took
    7.4 ms on one core, with these 2.7 ms (benchmarks/README.md, AMD EPYC)."""
    bufs = _scratch.__dict__.setdefault("bufs", {})
    buf = bufs.get(name)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = bufs[name] = np.empty(shape, dtype)
    return buf


def _resize_crop_flip(x: np.ndarray, mid: tuple[int, int], size: int,
                      boxes: Sequence[tuple[int, int, int, int]], flips: np.ndarray) -> np.ndarray:
    """Batch of ``Resize`` to ``mid`` (h, w), crop ``boxes`` (top, left, h, w), resize to
    ``size``², mirror where ``flips``: two batched matrix products in float32."""
    n, h, w, c = x.shape
    aw = np.stack([_axis_matrix(w, mid[1], size, b[1], b[3], bool(f)) for b, f in zip(boxes, flips)],
                  out=_buffer("aw", (n, size, w)))
    ah = np.stack([_axis_matrix(h, mid[0], size, b[0], b[2], False) for b in boxes],
                  out=_buffer("ah", (n, size, h)))
    # Both products as wide batched GEMMs: the pixels go to N, H, C, W once, height multiplies
    # from the left (N, size, H) @ (N, H, C·W) and width from the right (N, size·C, W) @
    # (N, W, size); the uint8 result goes back to NHWC. Multiplying the width on the NHWC
    # layout directly is N·size tiny (size×W)@(W×C) products, 1.6× slower in all.
    xt = _buffer("xt", (n, h, c, w))
    np.copyto(xt, x.transpose(0, 1, 3, 2))
    t = np.matmul(ah, xt.reshape(n, h, c * w), out=_buffer("t1", (n, size, c * w)))
    t = np.matmul(t.reshape(n, size * c, w), aw.transpose(0, 2, 1),
                  out=_buffer("t2", (n, size * c, size)))
    t += 0.5
    np.clip(t, 0, 255.49, out=t)
    out = np.empty((n, size, size, c), np.uint8)
    np.copyto(out, t.reshape(n, size, c, size).transpose(0, 1, 3, 2), casting="unsafe")
    return out


def _fused_recipe(transforms):
    """(Resize, RandomResizedCrop, flip or None) when ``transforms`` is the CIFAR recipe's
    shape with bilinear filters, else None."""
    t = list(transforms)
    if len(t) not in (2, 3) or type(t[0]) is not Resize or type(t[1]) is not RandomResizedCrop:
        return None
    if len(t) == 3 and type(t[2]) is not RandomHorizontalFlip:
        return None
    if t[0].interpolation != "bilinear" or t[1].interpolation != "bilinear":
        return None
    return t[0], t[1], (t[2] if len(t) == 3 else None)


#: resize filters by name (torchvision's InterpolationMode names)
INTERPOLATIONS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def _filter(interpolation: str) -> int:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose from {', '.join(INTERPOLATIONS)}")
    return INTERPOLATIONS[interpolation]


def _resize(img: np.ndarray, width: int, height: int,
            box: tuple[float, float, float, float] | None = None,
            interpolation: str = "bilinear") -> np.ndarray:
    pil = Image.fromarray(img)
    return np.asarray(pil.resize((int(width), int(height)), _filter(interpolation), box=box))


class Resize:
    """Resize the shorter side to ``size`` keeping the aspect ratio (torchvision's Resize(int)).

    ``interpolation`` is ``nearest``, ``bilinear`` (the default, as in torchvision) or ``bicubic``.
    """

    def __init__(self, size: int, interpolation: str = "bilinear"):
        self.size = int(size)
        self.interpolation = interpolation
        _filter(interpolation)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) an h×w image is resized to."""
        if min(h, w) == self.size:
            return h, w
        if h <= w:
            return self.size, int(round(self.size * w / h))
        return int(round(self.size * h / w)), self.size

    def __call__(self, img, rng=None):
        h, w = img.shape[:2]
        if min(h, w) == self.size:
            return img
        nh, nw = self.out_size(h, w)
        return _resize(img, nw, nh, interpolation=self.interpolation)

    def __repr__(self):
        return f"Resize({self.size}, {self.interpolation!r})"


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

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 interpolation: str = "bilinear"):
        self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)
        self.interpolation = interpolation
        _filter(interpolation)

    #: tries per image before the central fallback (torchvision's 10)
    TRIES = 10

    def boxes(self, h: int, w: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` crop boxes (top, left, height, width) of an h×w image, as an n×4 int array.

        Every image takes exactly ``4 * TRIES`` uniform doubles from ``rng`` (area, aspect,
        top, left per try), so drawing n boxes at once consumes the stream as n calls of
        :meth:`box` in turn do, and the batch path and the image-by-image path crop alike. The
        rule is torchvision's: the first try whose box fits, else a clamped central crop.
        """
        u = rng.random((n, self.TRIES, 4))
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        target = h * w * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[..., 0])
        aspect = np.exp(log_r[0] + (log_r[1] - log_r[0]) * u[..., 1])
        cw = np.round(np.sqrt(target * aspect)).astype(np.int64)
        ch = np.round(np.sqrt(target / aspect)).astype(np.int64)
        fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        # a uniform integer in [0, h - ch]: floor of a double in [0, h - ch + 1)
        top = np.floor(u[..., 2] * (h - ch + 1)).astype(np.int64)
        left = np.floor(u[..., 3] * (w - cw + 1)).astype(np.int64)
        first = fits.argmax(axis=1)
        rows = np.arange(n)
        out = np.stack([top[rows, first], left[rows, first], ch[rows, first], cw[rows, first]], 1)
        miss = ~fits.any(axis=1)
        if miss.any():
            out[miss] = self._central(h, w)
        return out

    def _central(self, h: int, w: int) -> tuple[int, int, int, int]:
        in_ratio = w / h
        if in_ratio < min(self.ratio):
            cw, ch = w, int(round(w / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            ch, cw = h, int(round(h * max(self.ratio)))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def box(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """One crop box (top, left, height, width): :meth:`boxes` for a single image."""
        return tuple(int(v) for v in self.boxes(h, w, 1, rng)[0])

    def __call__(self, img, rng):
        top, left, ch, cw = self.box(img.shape[0], img.shape[1], rng)
        return _resize(img, self.size, self.size, box=(left, top, left + cw, top + ch),
                       interpolation=self.interpolation)

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


def _pad_widths(padding) -> tuple[int, int, int, int]:
    """torchvision's padding forms: int, (left/right, top/bottom) or (left, top, right, bottom)."""
    p = (padding,) if isinstance(padding, (int, np.integer)) else tuple(padding)
    if len(p) == 1:
        p = p * 4
    elif len(p) == 2:
        p = (p[0], p[1], p[0], p[1])
    if len(p) != 4 or any(int(v) != v or v < 0 for v in p):
        raise ValueError(f"padding must be an int >= 0 or 2 or 4 of them, got {padding!r}")
    return tuple(int(v) for v in p)  # type: ignore[return-value]


PADDING_MODES = ("constant", "reflect", "edge", "symmetric")


def pad(img: np.ndarray, padding, padding_mode: str = "constant", fill=0) -> np.ndarray:
    """torchvision's ``Pad`` in numpy (``reflect`` leaves the edge pixel out, ``symmetric`` repeats it)."""
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"unknown padding_mode {padding_mode!r}; choose from {', '.join(PADDING_MODES)}")
    left, top, right, bottom = _pad_widths(padding)
    if not (left or top or right or bottom):
        return img
    widths = ((top, bottom), (left, right), (0, 0))
    if padding_mode == "constant":
        out = np.empty((img.shape[0] + top + bottom, img.shape[1] + left + right, img.shape[2]), img.dtype)
        out[...] = np.asarray(fill, dtype=img.dtype)
        out[top:top + img.shape[0], left:left + img.shape[1]] = img
        return out
    return np.pad(img, widths, mode=padding_mode)


class RandomCrop:
    """torchvision's ``RandomCrop(size, padding, pad_if_needed, fill, padding_mode)``.

    Pads (``constant`` with ``fill``, ``reflect``, ``edge`` or ``symmetric``), then crops a
    ``size``×``size`` window at a uniformly drawn position (top first, then left).
    """

    def __init__(self, size: int, padding=0, padding_mode: str = "constant", fill=0,
                 pad_if_needed: bool = False):
        self.size, self.padding = int(size), padding
        self.padding_mode, self.fill, self.pad_if_needed = padding_mode, fill, bool(pad_if_needed)
        _pad_widths(padding)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"unknown padding_mode {padding_mode!r}; choose from {', '.join(PADDING_MODES)}")

    def __call__(self, img, rng):
        img = pad(img, self.padding, self.padding_mode, self.fill)
        h, w = img.shape[:2]
        s = self.size
        if self.pad_if_needed and (h < s or w < s):
            img = pad(img, (max(0, s - w), max(0, s - h)), self.padding_mode, self.fill)
            h, w = img.shape[:2]
        if h < s or w < s:
            raise ValueError(f"RandomCrop({s}) of a {h}x{w} image: resize first or pass pad_if_needed=True")
        top = int(rng.integers(0, h - s + 1))
        left = int(rng.integers(0, w - s + 1))
        return img[top:top + s, left:left + s]

    def __repr__(self):
        return f"RandomCrop({self.size}, padding={self.padding!r}, padding_mode={self.padding_mode!r})"


class RandomRotation:
    """torchvision's ``RandomRotation(degrees, interpolation, expand, fill)`` with Pillow.

    The angle is uniform in ``[-degrees, degrees]`` (or the given ``(min, max)``), counter-
    clockwise like torchvision; corners outside the image get ``fill``.
    """

    def __init__(self, degrees, fill=0, interpolation: str = "nearest", expand: bool = False):
        d = (-float(degrees), float(degrees)) if np.isscalar(degrees) else tuple(float(v) for v in degrees)
        if len(d) != 2 or d[0] > d[1]:
            raise ValueError(f"degrees must be a number >= 0 or (min, max), got {degrees!r}")
        self.degrees, self.fill, self.interpolation, self.expand = d, fill, interpolation, bool(expand)
        _filter(interpolation)

    def __call__(self, img, rng):
        angle = float(rng.uniform(self.degrees[0], self.degrees[1]))
        fill = tuple(int(v) for v in np.broadcast_to(np.asarray(self.fill), (img.shape[2],)))
        out = Image.fromarray(img).rotate(angle, resample=_filter(self.interpolation),
                                          expand=self.expand, fillcolor=fill)
        return np.asarray(out)

    def __repr__(self):
        return f"RandomRotation({self.degrees}, fill={self.fill!r})"


def _fill_box(img: np.ndarray, top: int, left: int, h: int, w: int, value, rng) -> np.ndarray:
    out = img.copy()
    if isinstance(value, str):  # "random": fresh noise pixels, torchvision's value="random"
        out[top:top + h, left:left + w] = rng.integers(0, 256, (h, w, img.shape[2]), dtype=np.uint8)
    else:
        out[top:top + h, left:left + w] = np.asarray(value, dtype=img.dtype)
    return out


class RandomErasing:
    """torchvision's ``RandomErasing(p, scale, ratio, value)`` on uint8 pixels.

    With probability ``p`` a rectangle of area fraction in ``scale`` and aspect in ``ratio``
    (10 tries, else nothing) is set to ``value``: a pixel value (0 = black) or ``"random"``.
    """

    def __init__(self, p: float = 0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0):
        if not 0 <= p <= 1:
            raise ValueError(f"RandomErasing: p must be in [0, 1], got {p!r}")
        if isinstance(value, str) and value != "random":
            raise ValueError(f"RandomErasing: value must be a pixel value or 'random', got {value!r}")
        self.p, self.scale, self.ratio, self.value = float(p), tuple(scale), tuple(ratio), value

    def __call__(self, img, rng):
        if rng.random() >= self.p:
            return img
        h, w = img.shape[:2]
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = h * w * rng.uniform(self.scale[0], self.scale[1])
            aspect = math.exp(rng.uniform(*log_r))
            eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if eh < h and ew < w:
                top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
                return _fill_box(img, top, left, eh, ew, self.value, rng)
        return img

    def __repr__(self):
        return f"RandomErasing({self.p}, scale={self.scale}, ratio={self.ratio}, value={self.value!r})"


class Cutout:
    """Cutout (DeVries & Taylor 2017): ``n_holes`` squares of side ``size`` set to ``fill``.

    Each centre is uniform over the image and the square is clipped at the border.
    """

    def __init__(self, size: int, n_holes: int = 1, p: float = 1.0, fill=0):
        if int(size) < 1 or int(n_holes) < 1 or not 0 <= p <= 1:
            raise ValueError(f"Cutout needs size >= 1, n_holes >= 1, p in [0, 1]; got {size}, {n_holes}, {p}")
        self.size, self.n_holes, self.p, self.fill = int(size), int(n_holes), float(p), fill

    def __call__(self, img, rng):
        if rng.random() >= self.p:
            return img
        h, w = img.shape[:2]
        for _ in range(self.n_holes):
            cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
            top, left = max(0, cy - self.size // 2), max(0, cx - self.size // 2)
            bottom, right = min(h, cy + self.size - self.size // 2), min(w, cx + self.size - self.size // 2)
            img = _fill_box(img, top, left, bottom - top, right - left, self.fill, rng)
        return img

    def __repr__(self):
        return f"Cutout({self.size}, n_holes={self.n_holes}, p={self.p})"


def _coins(seed: int, idx: np.ndarray) -> np.ndarray:
    """One fixed fair coin per image index (splitmix64 of ``seed`` and the index): the same
    bits in every epoch, every process and every backend."""
    with np.errstate(over="ignore"):
        z = (np.asarray(idx, np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(int(seed) + 1))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(63)).astype(bool)


class ShiftAltFlip:
    """The speed-run record's augmentation (airbench94: ``translate=2``, ``flip`` with
    ``altflip``): a shift of up to ``pad`` pixels in each direction (reflect padding, a fresh
    draw per image and epoch) and an *alternating* mirror: each image gets one fixed coin, is
    mirrored in even epochs when it came up heads and in odd epochs when it came up tails, so
    over any two epochs every image is seen both ways (more diversity than a new coin per
    epoch, airbench's paper §3.6).

    It needs the images' indices and the epoch, which the loader passes to
    :meth:`epoch_batch`; called as a plain ``t(image, rng)`` transform (outside a loader) it
    cannot alternate and flips with a coin from ``rng``, as ``shift-flip`` does.
    """

    def __init__(self, size: int, pad: int = 2):
        self.size, self.pad = int(size), int(pad)
        if self.pad < 0:
            raise ValueError(f"ShiftAltFlip: pad must be >= 0, got {pad!r}")

    def epoch_batch(self, x: np.ndarray, rng: np.random.Generator, idx: np.ndarray, epoch: int,
                    seed: int) -> np.ndarray:
        """The batch ``x`` (N×H×W×C uint8, images ``idx`` of the set) as epoch ``epoch`` sees it."""
        n, h, w = x.shape[:3]
        if (h, w) != (self.size, self.size):
            x = np.stack([CenterCrop(self.size)(Resize(self.size)(im)) for im in x])
            n, h, w = x.shape[:3]
        p = self.pad
        if p:
            padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
            dy, dx = rng.integers(0, 2 * p + 1, n), rng.integers(0, 2 * p + 1, n)
            rows = (dy[:, None] + np.arange(h))[:, :, None]
            cols = (dx[:, None] + np.arange(w))[:, None, :]
            x = padded[np.arange(n)[:, None, None], rows, cols]
        flip = _coins(seed, idx) ^ bool(int(epoch) % 2)
        if flip.any():
            x = x.copy() if not x.flags.writeable else x
            x[flip] = x[flip][:, :, ::-1]
        return np.ascontiguousarray(x)

    def __call__(self, img, rng):
        img = RandomCrop(self.size, self.pad, padding_mode="reflect")(
            CenterCrop(self.size)(Resize(self.size)(img)), rng) if self.pad else img
        return img[:, ::-1] if rng.random() < 0.5 else img

    def __repr__(self):
        return f"ShiftAltFlip({self.size}, pad={self.pad})"


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


#: the image side the Dog chapter's augmentation was chosen for (ImageNet-size photos)
DOG_SIZE = 224


def dog_train_scaled(size: int = 224) -> Compose:
    """The Dog chapter's training augmentation scaled to ``size`` (``--augment scaled``):
    at 224 px exactly :func:`dog_train`; smaller images get crops that keep more of the
    image and milder colour noise, both in proportion to the side.

    The chapter's smallest crop, 8 % of the area, keeps a subject at 224 px; at 64 px it
    often loses it (docs/kaggle_dog.md): the smallest area fraction grows as
    ``0.08 · 224 / size`` (0.28 at 64 px, 0.19 at 96, capped at 1), and ColorJitter's 0.4
    and lighting's 0.1 shrink as ``size / 224`` (0.11 and 0.03 at 64 px).
    """
    f = min(1.0, size / DOG_SIZE)
    jitter = round(0.4 * f, 3)
    return Compose([RandomResizedCrop(size, scale=(min(1.0, round(0.08 / f, 3)), 1.0),
                                      ratio=(3 / 4, 4 / 3)),
                    RandomHorizontalFlip(),
                    ColorJitter(jitter, jitter, jitter),
                    Lighting(round(0.1 * f, 3))])


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


#: named augmentation presets (``--augment``); "book" is each chapter's own recipe
PRESETS = ("book", "scaled", "crop-flip", "crop-flip-rotate", "shift-flip", "shift-altflip",
           "none")


def preset_transforms(preset: str, size: int, book: str = "cifar",
                      interpolation: str = "bilinear") -> tuple[Compose, Compose]:
    """(train, test) transforms of an augmentation preset at image size ``size``.

    ``book`` is the chapter recipe (``cifar``/``dog``) whose transforms ``"book"`` returns and
    whose test transform every preset keeps. ``scaled`` is the book's with its crop and
    colour noise scaled to ``size`` (:func:`dog_train_scaled`; the CIFAR chapter's recipe is
    already defined in proportion to its size, so ``scaled`` is the book's there).
    ``crop-flip`` is the CIFAR-10 write-up's
    RandomCrop(size, padding size/8) + flip; ``crop-flip-rotate`` the CIFAR-100 write-up's
    reflect-padded crop + flip + rotation (±15°); ``shift-flip`` the speed-runs' light one
    (airbench): a reflect-padded crop that shifts by up to size/16 (2 px at 32) + flip, no
    resampling; ``shift-altflip`` the same shift with the record's alternating mirror
    (:class:`ShiftAltFlip`); ``none`` trains on the test transform.
    Images are first resized (shorter side to ``size``, with ``interpolation``).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose from {', '.join(PRESETS)}")
    book_train, book_test = get_transforms(book, size)
    if preset == "book" or (preset == "scaled" and book != "dog"):
        return book_train, book_test
    if preset == "scaled":
        return dog_train_scaled(size), book_test
    pad_px = max(1, int(round(size / 8)))
    if preset == "shift-altflip":
        return ShiftAltFlip(size, max(1, int(round(size / 16)))), book_test
    first = [Resize(size, interpolation)]
    if preset == "none":
        return Compose(first + [CenterCrop(size)]), book_test
    if preset == "crop-flip":
        rest = [RandomCrop(size, pad_px), RandomHorizontalFlip()]
    elif preset == "shift-flip":
        rest = [RandomCrop(size, max(1, int(round(size / 16))), padding_mode="reflect"),
                RandomHorizontalFlip()]
    else:
        rest = [RandomCrop(size, pad_px, padding_mode="reflect"), RandomHorizontalFlip(),
                RandomRotation(15)]
    return Compose(first + rest), book_test


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
