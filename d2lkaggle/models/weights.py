"""Neutral weight files shared by every backend (framework-free).

A neutral file holds parameters AND BatchNorm running statistics as float32 arrays under
canonical names, in PyTorch's layouts:

* ResNet-34 and the fine-tune backbone: torchvision's ``resnet34`` state_dict names
  (``conv1.weight``, ``layer2.0.downsample.1.running_var`` ...), without
  ``num_batches_tracked``.
* The book's ResNet-18: ``conv1``/``bn1`` (stem), ``layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}``
  and, for the first block of layers 2–4, the 1×1 shortcut ``conv3``; ``fc`` for the output.
* The fine-tune head: ``head.0`` (Linear 512→hidden) and ``head.2`` (Linear hidden→classes).
* EfficientNetV2-S/M/L: torchvision's ``efficientnet_v2_*`` state_dict names
  (``features.{i}.{j}.block.{k}.0.weight``, ``...block.2.fc1.bias`` for squeeze-excitation,
  ``classifier.1.weight``); the ``finetune_net(arch="efficientnet_v2_*")`` net is that model.
* ``cnn_elu``: the write-up's ``layer.{0,2,3,5,7,9}`` and ``fc_layer.{0,3,4}``.

Linear weights are ``[out, in]`` and convolutions ``[out, in, kh, kw]``; a backend whose
layout differs (Paddle's Linear is ``[in, out]``) transposes when it maps names.
Files are ``.safetensors`` (via ``safetensors.numpy``) or ``.npz``.

:func:`read_weights` also reads the frameworks' own files (``.pth``/``.pt``, MXNet
``.params``, Paddle ``.pdparams``; :mod:`d2lkaggle.models.formats`) and a run's training
checkpoints (``checkpoints/valid/best.npz``), always without running code from the file.
:func:`match_weights` decides how a file starts a model — whole, all but a classifier for
another number of classes, or a backbone — or names the first key or shape that fits nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ..utils.files import META_KEY, atomic_open, atomic_path
from .formats import (MXNET_SUFFIXES, PADDLE_SUFFIXES, TORCH_SUFFIXES, UnsafeWeightsError,  # noqa: F401
                      read_mxnet_params, read_npz, read_paddle_params, read_safetensors,
                      read_torch_zip)

NEUTRAL_SUFFIXES = (".safetensors", ".npz")
#: every weight file :func:`read_weights` reads
WEIGHT_SUFFIXES = NEUTRAL_SUFFIXES + TORCH_SUFFIXES + MXNET_SUFFIXES + PADDLE_SUFFIXES
#: a training checkpoint's model arrays (``last.npz``/``best.npz``: ``model/<name>``)
CHECKPOINT_PREFIX = "model/"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights cannot be had (offline, or no download path for this framework).

    ``str(e)`` tells a Python caller what to pass (``weights='FILE'``); :meth:`for_cli`
    says the same to a command-line user (``--weights FILE``): the text ``{arg}`` in
    ``template`` becomes one or the other, with ``value`` as the file.
    """

    def __init__(self, template: str, value: str = "PATH"):
        self.template, self.value = template, value
        super().__init__(template.replace(
            "{arg}", f"weights={value if value == 'PATH' else repr(value)}"))

    def for_cli(self) -> str:
        """The message in the command line's words."""
        return self.template.replace("{arg}", f"--weights {self.value}")


def is_neutral(path: str) -> bool:
    """True for a path with a neutral-format suffix."""
    return str(path).endswith(NEUTRAL_SUFFIXES)


def save_neutral(path: str, state: Mapping[str, np.ndarray]) -> str:
    """Write canonical ``state`` (name → array) to ``path`` as float32, atomically."""
    if not is_neutral(path):
        raise ValueError(f"{path}: a neutral weight file ends with one of {NEUTRAL_SUFFIXES}")
    arrays = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in state.items()}
    if path.endswith(".safetensors"):
        from safetensors.numpy import save_file
        with atomic_path(path, ".safetensors") as tmp:
            save_file(arrays, tmp)
    else:
        with atomic_open(path) as f:
            np.savez(f, **arrays)
    return path


def load_neutral(path: str, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Read a neutral weight file into ``{name: float32 array}``; a run's training checkpoint
    (``model/<name>`` arrays beside the optimizer's) gives its model's arrays. Every array is
    checked before it is read (:func:`~d2lkaggle.models.formats.read_npz`,
    :func:`~d2lkaggle.models.formats.read_safetensors`; ``max_bytes``: the memory limit)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.endswith(".safetensors"):
        state = read_safetensors(path, max_bytes)
    elif path.endswith(".npz"):
        state = read_npz(path, max_bytes, skip=lambda k: k == META_KEY or k.startswith("__"))
        if any(k.startswith(CHECKPOINT_PREFIX) for k in state):   # a training checkpoint
            state = {k[len(CHECKPOINT_PREFIX):]: v for k, v in state.items()
                     if k.startswith(CHECKPOINT_PREFIX)}
    else:
        raise ValueError(f"{path}: not a neutral weight file ({', '.join(NEUTRAL_SUFFIXES)})")
    return {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}


def check_state(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, np.ndarray], *,
                source: str = "weights", allow_missing: tuple[str, ...] = (),
                ignore_extra: tuple[str, ...] = (), limit: int = 10) -> None:
    """Raise ``ValueError`` listing the first name/shape mismatches between a model and a file.

    ``expected`` maps canonical names to shapes. Names starting with a prefix in
    ``allow_missing`` may be absent from ``state``; names in ``state`` starting with a
    prefix in ``ignore_extra`` are not reported.
    """
    problems = []
    for name, shape in expected.items():
        if name not in state:
            if not (allow_missing and name.startswith(allow_missing)):
                problems.append(f"missing {name} {tuple(shape)}")
        elif tuple(state[name].shape) != tuple(shape):
            problems.append(f"shape of {name}: model {tuple(shape)}, file {tuple(state[name].shape)}")
    for name in state:
        if name not in expected and not (ignore_extra and name.startswith(ignore_extra)):
            problems.append(f"unexpected {name} {tuple(state[name].shape)}")
    if problems:
        shown = "; ".join(problems[:limit])
        more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
        raise ValueError(f"{source} do not fit the model: {shown}{more}")


def read_pth(path: str, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Read a PyTorch ``.pth`` state_dict into canonical float32 numpy arrays, without torch
    and without running code from the file (:func:`d2lkaggle.models.formats.read_torch_zip`);
    the other backends fine-tune from a torchvision checkpoint as it is."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    sd = read_torch_zip(path, max_bytes)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(sd).__name__}")
    return {k.removeprefix("module."): np.asarray(v, dtype=np.float32) for k, v in sd.items()
            if isinstance(v, np.ndarray) and not k.endswith("num_batches_tracked")}


#: MXNet's and Paddle's parameter names -> torch's (canonical) leaf names
_MXNET_LEAVES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                 "moving_var": "running_var"}
_PADDLE_LEAVES = {"_mean": "running_mean", "_variance": "running_var"}


def _renamed(state: Mapping[str, np.ndarray], leaves: Mapping[str, str]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in state.items():
        prefix, _, leaf = k.rpartition(".")
        out[(prefix + "." if prefix else "") + leaves.get(leaf, leaf)] = v
    return out


def read_mxnet(path: str, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Canonical arrays of an MXNet ``.params`` file (``arg:``/``aux:`` prefixes dropped,
    BatchNorm's ``gamma``/``beta``/``moving_*`` under torch's names; Dense is ``[out, in]``
    in both frameworks)."""
    state = {k.split(":", 1)[1] if k.startswith(("arg:", "aux:")) else k: v
             for k, v in read_mxnet_params(path, max_bytes).items()}
    return {k: np.asarray(v, dtype=np.float32) for k, v in _renamed(state, _MXNET_LEAVES).items()}


def read_pdparams(path: str, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Canonical arrays of a Paddle ``.pdparams`` file: BatchNorm's ``_mean``/``_variance``
    renamed, and Linear weights (Paddle's ``[in, out]``, the only 2-D ``weight`` of the
    table's models) transposed to ``[out, in]``."""
    state = _renamed(read_paddle_params(path, max_bytes), _PADDLE_LEAVES)
    return {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32).T)
            if k.endswith("weight") and np.ndim(v) == 2 else np.asarray(v, dtype=np.float32)
            for k, v in state.items()}


def read_weights(path: str, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Canonical ``{name: float32 array}`` of any weight file: neutral ``.safetensors``/``.npz``
    (a run's checkpoint too), torch ``.pth``/``.pt``, MXNet ``.params``, Paddle ``.pdparams``.

    Nothing in the file is executed; a file that holds more than arrays, or is not what its
    name says, raises :class:`~d2lkaggle.models.formats.UnsafeWeightsError` in one line (the
    file, the format it was read as, why, what to do), and so does a file that declares more
    than it holds or more memory than :class:`~d2lkaggle.models.limits.ReadBudget` allows
    (``max_bytes``, else ``D2LKAGGLE_MAX_WEIGHTS_GB``, else 8x the file + 64 MiB).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"--weights {path} is a folder; give a weight file "
                                f"({', '.join(WEIGHT_SUFFIXES)})")
    if is_neutral(path):
        return load_neutral(path, max_bytes)
    if path.endswith(TORCH_SUFFIXES):
        return read_pth(path, max_bytes)
    if path.endswith(MXNET_SUFFIXES):
        return read_mxnet(path, max_bytes)
    if path.endswith(PADDLE_SUFFIXES):
        return read_pdparams(path, max_bytes)
    raise ValueError(f"{path}: not a weight file this version reads (by its name); expected "
                     f"one of {', '.join(WEIGHT_SUFFIXES)}")


def convert(src: str, dst: str, max_bytes: int | None = None) -> str:
    """Convert any weight file :func:`read_weights` reads (a torchvision ``.pth``, an MXNet
    ``.params``, a Paddle ``.pdparams`` ...) to a neutral ``.safetensors``/``.npz`` file,
    written atomically with the mode the umask gives; a refused file writes nothing."""
    if not is_neutral(dst):
        raise ValueError(f"{dst}: the converted file ends with one of {NEUTRAL_SUFFIXES}")
    return save_neutral(dst, read_weights(src, max_bytes))


def strip_classifier(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop the ImageNet classifier (``fc.*``) so a ResNet-34 file loads as a fine-tune backbone."""
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def backbone_state(weights: str, framework: str) -> tuple[dict[str, np.ndarray], str]:
    """``(state, source)`` of a ResNet-34 backbone file for a fine-tune net (``fc.*`` dropped).

    ``"imagenet"`` is resolved here only for frameworks without torchvision's download path:
    it raises an error saying how to make the neutral file once.
    """
    if weights == "imagenet":
        raise WeightsUnavailableError(
            f"{framework} cannot download ResNet-34 ImageNet weights in torchvision's layout; "
            "convert torchvision's file once where torch is installed: `d2lkaggle weights "
            "convert resnet34-b627a593.pth resnet34.safetensors` (torchvision keeps it in "
            f"{torch_hub_checkpoints()}), then pass {{arg}} (or 'none' for a random "
            "backbone, which trains poorly)", "resnet34.safetensors")
    return strip_classifier(read_weights(weights)), f"weights in {weights}"


def torch_hub_checkpoints() -> str:
    """torch's download cache for model files (``$TORCH_HOME/hub/checkpoints``), without torch."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch")
    return os.path.join(home, "hub", "checkpoints")


def imagenet_file(arch: str, framework: str) -> str:
    """The local ImageNet weight file of ``arch`` for a backend without torchvision's download:
    a converted ``<name>.safetensors`` in torch's cache, else torchvision's ``.pth`` there.

    When neither exists, the error names the file, its URL and the folder, and the command
    that converts it once.
    """
    from .table import IMAGENET_WEIGHTS
    if arch not in IMAGENET_WEIGHTS:
        raise ValueError(f"no ImageNet weights for {arch!r}; known: {', '.join(IMAGENET_WEIGHTS)}")
    url = IMAGENET_WEIGHTS[arch]["url"]
    fname = os.path.basename(url)
    folder = torch_hub_checkpoints()
    converted = os.path.join(folder, os.path.splitext(fname)[0] + ".safetensors")
    for path in (converted, os.path.join(folder, fname)):
        if os.path.exists(path):
            return path
    raise RuntimeError(
        f"{framework}: the ImageNet {arch} weights are not on this machine; place torchvision's "
        f"{fname} (from {url}) in {folder} (or run `d2lkaggle weights convert {fname} "
        f"{os.path.basename(converted)}` there), or pass weights=PATH to a .pth/.safetensors file")


def fit_classifier(state: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]],
                   head: str, source: str) -> tuple[dict[str, np.ndarray], str | None]:
    """Drop the classifier (names starting with ``head``) from ``state`` when its shapes do
    not fit the model's (another number of classes): ``(state, message)``; the message says
    the head was replaced, or is ``None`` when the file's head fits (or it has none)."""
    names = [k for k in state if k.startswith(head)]
    if not names or all(k in expected and tuple(expected[k]) == tuple(state[k].shape) for k in names):
        return dict(state), None
    weight = next((k for k in names if k.endswith("weight")), names[0])
    file_shape = tuple(state[weight].shape)
    model_shape = tuple(expected.get(weight, ()))
    msg = (f"{source}: classifier {weight} is {file_shape} in the file, {model_shape} in the "
           f"model (another number of classes); the head is replaced by a new, randomly "
           "initialised one")
    return {k: v for k, v in state.items() if not k.startswith(head)}, msg


@dataclass
class StartWeights:
    """How a weight file starts a model (``--weights FILE``, ``weights=FILE``): the arrays to
    set, the name prefixes the model keeps as initialised, and what ``summary.json`` records."""

    file: str                       # absolute path
    sha1: str
    parts: str                      # "whole model" | "all but the classifier" | "backbone"
    state: dict[str, np.ndarray] = field(repr=False)
    keep: tuple[str, ...] = ()      # prefixes left new (the classifier)
    note: str = ""                  # the line a run says when it starts

    def record(self) -> dict[str, Any]:
        """``summary.json["weights"]``: the file, its SHA-1, which parts were loaded."""
        return {"file": self.file, "sha1": self.sha1, "parts": self.parts,
                "arrays": len(self.state), "new": [f"{k}*" for k in self.keep]}


def match_weights(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, np.ndarray],
                  head: str, *, source: str = "weights", model: str = "the model",
                  drop: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], str, tuple[str, ...], str]:
    """How ``state`` (a file's canonical arrays) starts a model of ``expected`` shapes whose
    classifier's names start with ``head``: ``(state to set, parts, prefixes kept new, note)``.

    * every name and shape fits: the whole model;
    * all but the classifier fit and the file's classifier has other shapes (another number of
      classes) or other names: all but the classifier, which starts new;
    * the file has no classifier: the backbone (a file's own classifier under a ``drop``
      prefix — ImageNet's ``fc.`` under a fine-tune net's ``head.`` — is left out first);
    * anything else raises ``ValueError`` naming the first name or shape that differs.
    """
    state = {k: v for k, v in state.items()
             if k in expected or not (drop and k.startswith(drop))}
    diffs = []
    for k, shape in expected.items():
        if k.startswith(head):
            continue
        if k not in state:
            diffs.append(f"{k} {tuple(shape)} of {model} is not in the file")
        elif tuple(state[k].shape) != tuple(shape):
            diffs.append(f"{k} is {tuple(state[k].shape)} in the file, {tuple(shape)} in {model}")
    diffs += [f"{k} {tuple(v.shape)} of the file is not in {model}" for k, v in state.items()
              if k not in expected and not k.startswith(head)]
    if diffs:
        fitting = sum(1 for k, v in state.items()
                      if k in expected and tuple(v.shape) == tuple(expected[k]))
        more = f"{len(diffs) - 1} more differences; " if len(diffs) > 1 else ""
        raise ValueError(f"{source} does not fit {model}: {diffs[0]} ({more}{fitting} of the "
                         f"file's {len(state)} arrays fit); pass a checkpoint "
                         f"of this model (--model chooses the model), or no --weights")
    body = {k: v for k, v in state.items() if not k.startswith(head)}
    file_head = {k: v for k, v in state.items() if k.startswith(head)}
    model_head = {k: tuple(s) for k, s in expected.items() if k.startswith(head)}
    if not file_head:
        return body, "backbone", (head,), (f"{source}: the backbone is loaded; the file has no "
                                           f"classifier ({head}*), so the model's starts new")
    if set(file_head) == set(model_head) and all(
            tuple(v.shape) == model_head[k] for k, v in file_head.items()):
        return dict(state), "whole model", (), f"{source}: the whole model is loaded"
    k = next((k for k in model_head if k in file_head and tuple(file_head[k].shape) != model_head[k]),
             None)
    why = (f"classifier {k} is {tuple(file_head[k].shape)} in the file, {model_head[k]} in "
           f"{model} (another number of classes)" if k else
           f"the file's classifier ({', '.join(sorted(file_head)[:3])}) is not {model}'s")
    return body, "all but the classifier", (head,), (
        f"{source}: {why}: all but the classifier is loaded; the head is replaced by a new, "
        "randomly initialised one")


def load_pretrained(net: Any, weights: str, arch: str, head: str, *, framework: str,
                    get_state: Callable[[Any], dict[str, np.ndarray]],
                    set_state: Callable[..., None],
                    imagenet_state: Callable[[str], dict[str, np.ndarray]] | None = None) -> None:
    """Load ``weights`` (``"imagenet"`` or a file) into a whole model with a backend's
    ``get_state``/``set_state``; a classifier (names starting with ``head``) for another
    number of classes is left new, and a warning says so once.

    ``imagenet_state(arch)``: the backend's own ImageNet download (torch); without it the file
    comes from torch's cache (:func:`imagenet_file`).
    """
    import warnings
    if weights == "imagenet":
        source = f"ImageNet {arch} weights"
        state = imagenet_state(arch) if imagenet_state else read_weights(imagenet_file(arch, framework))
    else:
        state, source = read_weights(weights), f"weights in {weights}"
    expected = {k: tuple(v.shape) for k, v in get_state(net).items()}
    state, replaced = fit_classifier(state, expected, head, source)
    if replaced:
        warnings.warn(replaced, stacklevel=4)
    set_state(net, state, source=source, allow_missing=(head,) if replaced else ())
