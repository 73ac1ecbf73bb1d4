"""Weights in PyTorch: canonical numpy state, neutral files, ``.pth`` and ImageNet weights."""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from ..models import weights as neutral

IMAGENET_RESNET34 = "IMAGENET1K_V1"


def _module(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, nn.DataParallel) else net


def get_state(net: nn.Module) -> dict[str, np.ndarray]:
    """Parameters and BatchNorm statistics as float32 numpy under canonical names."""
    return {k: v.detach().cpu().float().numpy().copy()
            for k, v in _module(net).state_dict().items() if not k.endswith("num_batches_tracked")}


def set_state(net: nn.Module, state: dict[str, np.ndarray], source: str = "weights",
              allow_missing: tuple[str, ...] = (), ignore_extra: tuple[str, ...] = ()) -> None:
    """Copy canonical numpy ``state`` into ``net`` after checking every name and shape."""
    net = _module(net)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()
                if not k.endswith("num_batches_tracked")}
    neutral.check_state(expected, state, source=source, allow_missing=allow_missing,
                        ignore_extra=ignore_extra)
    own = net.state_dict()
    with torch.no_grad():
        for k in expected:
            if k in state:
                own[k].copy_(torch.from_numpy(np.asarray(state[k])).to(own[k].dtype))


def save_weights(net: nn.Module, path: str) -> str:
    """Save ``net``'s weights: neutral ``.safetensors``/``.npz``, or a torch ``.pth``."""
    path = os.fspath(path)
    if neutral.is_neutral(path):
        return neutral.save_neutral(path, get_state(net))
    tmp = path + ".tmp"
    torch.save(_module(net).state_dict(), tmp)
    os.replace(tmp, path)
    return path


def load_weights(net: nn.Module, path: str) -> nn.Module:
    """Load weights saved by any backend (neutral file) or a torch ``.pth`` into ``net``."""
    set_state(net, neutral.read_weights(path), source=f"weights in {path}")
    return net


def imagenet_state(arch: str = "resnet34") -> dict[str, np.ndarray]:
    """torchvision's ImageNet weights of ``arch`` (a key of ``d2lkaggle.models.table.IMAGENET_WEIGHTS``)
    through torch's hub cache.

    Offline, the error names the file and the folder to place it in.
    """
    import torchvision

    from ..models.table import IMAGENET_WEIGHTS
    spec = IMAGENET_WEIGHTS[arch]
    w = getattr(torchvision.models, spec["enum"])[spec["tag"]]
    fname = os.path.basename(w.url)
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    try:
        sd = w.get_state_dict(progress=True, check_hash=True)
    except Exception as e:  # urllib raises several types when there is no network
        raise neutral.WeightsUnavailableError(
            f"cannot get the ImageNet {arch} weights ({e}); place {fname} "
            f"(from {w.url}) at {os.path.join(folder, fname)} to use it offline, "
            "or pass {arg} to a .pth / .safetensors file") from e
    return {k: v.float().numpy() for k, v in sd.items() if not k.endswith("num_batches_tracked")}


def imagenet_resnet34_state() -> dict[str, np.ndarray]:
    """torchvision's ResNet-34 ImageNet weights through torch's hub cache."""
    return imagenet_state("resnet34")


def load_pretrained(net: nn.Module, weights: str, arch: str, head: str) -> None:
    """Load ``"imagenet"`` or a weight file into a whole model (EfficientNetV2); another
    number of classes in the file's classifier → the model keeps its new one (said once)."""
    neutral.load_pretrained(net, weights, arch, head, framework="PyTorch", get_state=get_state,
                            set_state=set_state, imagenet_state=imagenet_state)


def load_backbone(net: nn.Module, weights: str) -> None:
    """Load a ResNet-34 backbone (and the head, when the file has one) into a fine-tune net."""
    if weights == "imagenet":
        state, source = imagenet_resnet34_state(), "ImageNet ResNet-34 weights"
        state = neutral.strip_classifier(state)
    else:
        state, source = neutral.backbone_state(weights, "PyTorch")
    set_state(net, state, source=source, allow_missing=("head.",))
