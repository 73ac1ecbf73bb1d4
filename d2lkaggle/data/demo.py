"""A built-in, learnable demo competition in the exact Kaggle layouts (no download needed).

``make_demo(out)`` draws ten classes of coloured shapes on noisy backgrounds and writes them
as the CIFAR-10 competition does (``train/<id>.png``, ``test/<id>.png``, ``trainLabels.csv``,
``sampleSubmission.csv``); ``layout="dog"`` writes the Dog Breed layout instead
(variable-size JPEGs with hex ids, ``labels.csv`` with ``id,breed`` and a probability
``sample_submission.csv``). ``small_subjects=True`` draws each shape smaller and anywhere in
the image (the harder Dog set of docs/kaggle_dog.md: a random crop of a small image often
loses it).
"""
from __future__ import annotations

import csv
import math
import os
import shutil
import tempfile

import numpy as np
from PIL import Image, ImageDraw

from ..utils.files import current_umask

SHAPES = ("circle", "square", "triangle", "cross", "ring", "hbar", "vbar", "diamond", "dots",
          "frame")
#: the Dog Breed layout's class names: the first ten of the demo, then the competition's other
#: breeds ("husky" stands for its siberian_husky), so that ``num_classes=120`` has the 120
#: columns of the competition's sample submission, as the Dog chapter's code expects
BREEDS = ("affenpinscher", "beagle", "chihuahua", "dingo", "eskimo_dog", "french_bulldog",
          "golden_retriever", "husky", "labrador_retriever", "maltese_dog",
          "afghan_hound", "african_hunting_dog", "airedale", "american_staffordshire_terrier",
          "appenzeller", "australian_terrier", "basenji", "basset", "bedlington_terrier",
          "bernese_mountain_dog", "black-and-tan_coonhound", "blenheim_spaniel", "bloodhound",
          "bluetick", "border_collie", "border_terrier", "borzoi", "boston_bull",
          "bouvier_des_flandres", "boxer", "brabancon_griffon", "briard", "brittany_spaniel",
          "bull_mastiff", "cairn", "cardigan", "chesapeake_bay_retriever", "chow", "clumber",
          "cocker_spaniel", "collie", "curly-coated_retriever", "dandie_dinmont", "dhole",
          "doberman", "english_foxhound", "english_setter", "english_springer", "entlebucher",
          "flat-coated_retriever", "german_shepherd", "german_short-haired_pointer",
          "giant_schnauzer", "gordon_setter", "great_dane", "great_pyrenees",
          "greater_swiss_mountain_dog", "groenendael", "ibizan_hound", "irish_setter",
          "irish_terrier", "irish_water_spaniel", "irish_wolfhound", "italian_greyhound",
          "japanese_spaniel", "keeshond", "kelpie", "kerry_blue_terrier", "komondor", "kuvasz",
          "lakeland_terrier", "leonberg", "lhasa", "malamute", "malinois", "mexican_hairless",
          "miniature_pinscher", "miniature_poodle", "miniature_schnauzer", "newfoundland",
          "norfolk_terrier", "norwegian_elkhound", "norwich_terrier", "old_english_sheepdog",
          "otterhound", "papillon", "pekinese", "pembroke", "pomeranian", "pug", "redbone",
          "rhodesian_ridgeback", "rottweiler", "saint_bernard", "saluki", "samoyed",
          "schipperke", "scotch_terrier", "scottish_deerhound", "sealyham_terrier",
          "shetland_sheepdog", "shih-tzu", "silky_terrier", "soft-coated_wheaten_terrier",
          "staffordshire_bullterrier", "standard_poodle", "standard_schnauzer",
          "sussex_spaniel", "tibetan_mastiff", "tibetan_terrier", "toy_poodle", "toy_terrier",
          "vizsla", "walker_hound", "weimaraner", "welsh_springer_spaniel",
          "west_highland_white_terrier", "whippet", "wire-haired_fox_terrier",
          "yorkshire_terrier")


#: the subject's radius as a fraction of the shorter side: (low, high) for normal and small subjects
RADIUS = {False: (0.22, 0.36), True: (0.10, 0.18)}


def _centre(w: int, h: int, r: float, small: bool, spread: float,
            rng: np.random.Generator) -> tuple[float, float]:
    """The subject's centre: near the middle (``spread`` of each side), or for small subjects
    anywhere the whole shape (up to 1.3 r from its centre: the bars) stays inside."""
    if not small:
        return (w / 2 + rng.uniform(-spread, spread) * w, h / 2 + rng.uniform(-spread, spread) * h)
    m = min(1.3 * r + 1, w / 2, h / 2)
    return float(rng.uniform(m, w - m)), float(rng.uniform(m, h - m))


def _draw(shape: str, w: int, h: int, rng: np.random.Generator,
          small: bool = False) -> Image.Image:
    # Background: a random colour gradient plus pixel noise, so colour alone never gives the class.
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    bg = c0 * (1 - t) + c1 * t + rng.normal(0, 12, (h, w, 3))
    img = Image.fromarray(np.clip(np.broadcast_to(bg, (h, w, 3)), 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    fg = tuple(int(v) for v in (255 - (c0 + c1) // 2 + rng.integers(-40, 41, 3)) % 256)
    s = min(w, h)
    r = s * rng.uniform(*RADIUS[small])
    cx, cy = _centre(w, h, r, small, 0.12, rng)
    lw = max(1, int(round(s / 12)))
    _shape_on(d, shape, cx, cy, r, max(2, lw * 2), fg)
    return img


def _draw_hard(shape: str, w: int, h: int, rng: np.random.Generator,
               small: bool = False) -> Image.Image:
    """The harder demo: random colours, low contrast, heavy noise, clutter, rotation, scale."""
    # background: two random colours in random blotches, not a clean gradient
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    k = max(2, min(w, h) // 8)
    blot = np.asarray(Image.fromarray(rng.integers(0, 256, (k, k), dtype=np.uint8)).resize(
        (w, h), Image.BILINEAR), dtype=np.float64)[..., None] / 255.0
    bg = c0 * (1 - blot) + c1 * blot
    # foreground: any colour at least a little away from the background mean
    fg = rng.integers(0, 256, 3)
    while np.abs(fg - bg.mean((0, 1))).sum() < 150:
        fg = rng.integers(0, 256, 3)
    # the shape as a soft mask drawn at twice the size (anti-aliased when scaled down)
    mask = Image.new("L", (w * 2, h * 2), 0)
    s = min(w, h) * 2
    r = s * rng.uniform(*RADIUS[small])
    cx, cy = _centre(w * 2, h * 2, r, small, 0.15, rng)
    d = ImageDraw.Draw(mask)
    _shape_on(d, shape, cx, cy, r, max(2, int(round(s / 12))) * 2, 255)
    mask = mask.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR, center=(cx, cy))
    m = np.asarray(mask.resize((w, h), Image.BILINEAR), dtype=np.float64)[..., None] / 255.0
    img = bg * (1 - m) + fg * m
    # clutter: a few small blobs of random colours, then strong pixel noise
    for _ in range(int(rng.integers(0, 3))):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        q = max(1, int(min(w, h) * rng.uniform(0.03, 0.07)))
        img[max(0, y0 - q):y0 + q, max(0, x0 - q):x0 + q] = rng.integers(0, 256, 3)
    img = img + rng.normal(0, 20, (h, w, 3))
    # colour randomisation: channels permuted and sometimes inverted, per image
    img = np.clip(img, 0, 255)[..., rng.permutation(3)]
    if rng.random() < 0.3:
        img = 255 - img
    return Image.fromarray(img.astype(np.uint8))


def _shape_on(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, lw: int,
              fg) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=fg)
    elif shape == "square":
        d.rectangle(box, fill=fg)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    elif shape == "cross":
        d.rectangle((cx - r, cy - r / 3, cx + r, cy + r / 3), fill=fg)
        d.rectangle((cx - r / 3, cy - r, cx + r / 3, cy + r), fill=fg)
    elif shape == "ring":
        d.ellipse(box, outline=fg, width=lw)
    elif shape == "hbar":
        d.rectangle((cx - r * 1.3, cy - r / 4, cx + r * 1.3, cy + r / 4), fill=fg)
    elif shape == "vbar":
        d.rectangle((cx - r / 4, cy - r * 1.3, cx + r / 4, cy + r * 1.3), fill=fg)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fg)
    elif shape == "dots":
        q = r / 2.2
        for dx, dy in ((-1, -1), (1, -1), (-1, 1), (1, 1)):
            x, y = cx + dx * r * 0.6, cy + dy * r * 0.6
            d.ellipse((x - q, y - q, x + q, y + q), fill=fg)
    elif shape == "frame":
        d.rectangle(box, outline=fg, width=lw)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _write_csv(path: str, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def make_demo(out_dir: str, n_train: int = 1000, n_test: int = 200, size: int = 32,
              seed: int = 0, layout: str = "cifar10", num_classes: int = 10,
              hard: bool = False, small_subjects: bool = False,
              max_size: int | None = None) -> str:
    """Write a synthetic competition to ``out_dir`` and return ``out_dir``.

    Classes are balanced (``n_train // num_classes`` each, the remainder spread over the
    first classes) and shuffled over ids. The folder is built beside ``out_dir`` and renamed
    into place, so an interrupted call never leaves a half-written competition; an existing
    ``out_dir`` is replaced. The Dog layout takes up to 120 breeds, the competition's count
    (beyond ten the shapes repeat: a layout for the chapter's code, not a learnable set).
    ``hard=True`` draws the harder demo of docs/recipes.md (random
    colours and blotchy backgrounds, low contrast, strong noise, clutter, rotated and scaled
    shapes, channels permuted or inverted per image) on which the book's recipe learns slowly.
    ``small_subjects=True`` draws every shape at 10–18 % of the shorter side (instead of
    22–36 %), anywhere in the image. Dog layout: each side is drawn in ``[0.8 size, 1.6 size]``,
    or in ``[size, max_size]`` when ``max_size`` is given (``size=80, max_size=400``: the
    80–400 px set of docs/kaggle_dog.md).
    """
    if layout not in ("cifar10", "dog"):
        raise ValueError(f"unknown layout {layout!r}; choose 'cifar10' or 'dog'")
    most = len(SHAPES) if layout == "cifar10" else len(BREEDS)
    if not 2 <= num_classes <= most:
        raise ValueError(f"num_classes must be in 2..{most} for the {layout} layout, got {num_classes}")
    if n_train < num_classes:
        raise ValueError(f"n_train={n_train} is smaller than num_classes={num_classes}")
    if max_size is not None and (layout != "dog" or max_size < size):
        raise ValueError(f"max_size={max_size} needs layout='dog' and max_size >= size ({size})")
    lo, hi = (size, max_size) if max_size is not None else (int(size * 0.8), int(size * 1.6))
    rng = np.random.default_rng(seed)
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".make_demo-", dir=parent)
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
    try:
        names = SHAPES[:num_classes] if layout == "cifar10" else BREEDS[:num_classes]
        train_cls = rng.permutation(np.arange(n_train) % num_classes)
        test_cls = rng.integers(0, num_classes, n_test)
        os.makedirs(os.path.join(tmp, "train"))
        os.makedirs(os.path.join(tmp, "test"))
        if layout == "cifar10":
            train_ids = [str(i + 1) for i in range(n_train)]
            test_ids = [str(i + 1) for i in range(n_test)]
        else:
            ids = {bytes(rng.integers(0, 256, 16, dtype=np.uint8)).hex() for _ in range(4 * (n_train + n_test))}
            ids = sorted(ids)
            rng.shuffle(ids)
            train_ids, test_ids = ids[:n_train], ids[n_train:n_train + n_test]
        for split, ids, classes in (("train", train_ids, train_cls), ("test", test_ids, test_cls)):
            for i, c in zip(ids, classes):
                draw = _draw_hard if hard else _draw
                if layout == "cifar10":
                    draw(SHAPES[c], size, size, rng, small_subjects).save(
                        os.path.join(tmp, split, f"{i}.png"))
                else:
                    w, h = (int(v) for v in rng.integers(lo, hi + 1, 2))
                    draw(SHAPES[c % len(SHAPES)], w, h, rng, small_subjects).save(
                        os.path.join(tmp, split, f"{i}.jpg"), quality=90)
        if layout == "cifar10":
            _write_csv(os.path.join(tmp, "trainLabels.csv"), ["id", "label"],
                       ((i, names[c]) for i, c in zip(train_ids, train_cls)))
            _write_csv(os.path.join(tmp, "sampleSubmission.csv"), ["id", "label"],
                       ((i, names[0]) for i in test_ids))
        else:
            _write_csv(os.path.join(tmp, "labels.csv"), ["id", "breed"],
                       ((i, names[c]) for i, c in zip(train_ids, train_cls)))
            p = repr(1 / num_classes)
            _write_csv(os.path.join(tmp, "sample_submission.csv"), ["id", *sorted(names)],
                       ([i, *([p] * num_classes)] for i in test_ids))
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def book_demo_size(batch_size: int, num_classes: int, valid_ratio: float = 0.1,
                   min_batches: int = 5) -> int:
    """The smallest ``n_train`` of a (balanced) :func:`make_demo` on which the chapters' own
    code runs with ``batch_size`` (step 2 of both chapters, "organizing the dataset").

    The book's loops have two weak spots on a tiny set, kept as the book has them
    (docs/from-the-book.md): ``(i + 1) % (num_batches // 5)`` divides by zero with fewer than
    ``min_batches`` training batches, and the validation loader drops its last partial batch,
    so a validation folder smaller than a batch yields nothing (and the accuracy divides by
    zero). The folders are the book's ``reorg_train_valid``: ``max(1, floor(n_min * ratio))``
    images of each class in ``valid/``, the rest in ``train/``; every class keeps at least
    one training image (a class missing from ``train/`` shifts ImageFolder's labels).
    """
    if batch_size < 1 or num_classes < 2 or not 0 < valid_ratio < 1:
        raise ValueError(f"batch_size >= 1, num_classes >= 2 and 0 < valid_ratio < 1, got "
                         f"{batch_size}, {num_classes}, {valid_ratio}")
    n = 2 * num_classes
    while True:
        n_valid = num_classes * max(1, math.floor(n // num_classes * valid_ratio))
        if n_valid >= batch_size and (n - n_valid) // batch_size >= min_batches:
            return n
        n += 1
