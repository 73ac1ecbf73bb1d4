"""A recipe's model, built in a backend: the model-table name and keywords a recipe gives.

The step between a :class:`~d2lkaggle.specs.recipe.Recipe` (values) and a backend's
``create_model`` (framework code): :func:`recipe_kwargs` picks the keywords that model takes,
:func:`build_net` calls the backend. A recipe is read by attribute, so this room needs nothing
from ``specs``.

A recipe's ``weights`` file (``--weights FILE``) starts every model the same way: the core reads
the file (:func:`~d2lkaggle.models.weights.read_weights`, no code from it runs), decides what it
fits (:func:`start_weights`: the whole model, all but a classifier for another number of
classes, or a backbone) and the backend only sets the arrays (its ``set_state``).
``"imagenet"`` goes to the builders that have ImageNet weights (finetune, EfficientNetV2).
"""
from __future__ import annotations

import os
from typing import Any

from ..utils.files import sha1
from ..utils.registry import FRAMEWORK_NAMES, canonical_name, get_backend
from .table import BACKBONE_CLASSIFIERS, HEADS, IMAGENET_MODELS, IMAGENET_WEIGHTS, check_model_name
from .weights import (StartWeights, WeightsUnavailableError, backbone_state, imagenet_file,
                      match_weights, read_weights, torch_hub_checkpoints)


def weights_file(weights: Any) -> str | None:
    """The file a recipe's ``weights`` names (``None`` for no weights or ``"imagenet"``)."""
    if weights is None or (isinstance(weights, str) and weights.strip().lower() in
                           ("imagenet", "none", "random", "")):
        return None
    return os.fspath(weights)


def check_weights(recipe: Any) -> None:
    """``weights="imagenet"`` only for a model that has ImageNet weights; a file must exist
    (before anything is written)."""
    w = getattr(recipe, "weights", None)
    if isinstance(w, str) and w.strip().lower() == "imagenet" and recipe.model not in IMAGENET_MODELS:
        raise ValueError(f"--weights imagenet: there are no ImageNet weights for {recipe.model} "
                         f"(they exist for {', '.join(IMAGENET_MODELS)}); pass a weight file "
                         "or no --weights")
    path = weights_file(w)
    if path is not None and not os.path.isfile(path):
        raise FileNotFoundError(f"--weights {path}: no such file" if not os.path.exists(path)
                                else f"--weights {path} is not a file")


def imagenet_arch(recipe: Any) -> str:
    """The ImageNet weights a recipe with ``weights="imagenet"`` loads (a key of
    :data:`~d2lkaggle.models.table.IMAGENET_WEIGHTS`): the fine-tune net's backbone, or the
    model itself."""
    if recipe.model == "finetune":
        return getattr(recipe, "arch", None) or "resnet34"
    return recipe.model


def check_imagenet_weights(recipe: Any, backend: str,
                           unreachable: Any = None) -> None:
    """``weights="imagenet"`` can be had before the run starts, or one line says how: torch
    finds torchvision's file in its cache or reaches its URL (``unreachable(url)``: why not,
    :func:`d2lkaggle.data.hub.unreachable`); MXNet and Paddle read a file in torch's cache
    (the fine-tune backbone only from a converted one). A Dog Breed run offline then fails in
    a second, not after minutes of loading its images."""
    if not (isinstance(recipe.weights, str) and recipe.weights.strip().lower() == "imagenet") \
            or recipe.model not in IMAGENET_MODELS:
        return
    backend, arch = canonical_name(backend), imagenet_arch(recipe)
    framework = FRAMEWORK_NAMES[backend]
    if backend != "torch":    # the wing's own check, with its own message, made now
        if recipe.model == "finetune" and arch == "resnet34":
            backbone_state("imagenet", framework)
        imagenet_file(arch, framework)
        return
    url = IMAGENET_WEIGHTS[arch]["url"]
    fname = os.path.basename(url)
    path = os.path.join(torch_hub_checkpoints(), fname)
    if os.path.exists(path):
        return
    if unreachable is None:
        from ..data.hub import unreachable
    why = unreachable(url)
    if why is not None:
        raise WeightsUnavailableError(
            f"cannot get the ImageNet {arch} weights: {url} cannot be reached ({why}) and "
            f"{fname} is not in {os.path.dirname(path)}; place {fname} at {path} to use it "
            "offline, or pass {arg} to a .pth / .safetensors file (or 'none' for a random "
            "backbone, which trains poorly)")


def head_of(recipe: Any) -> str:
    """The classifier's name prefix of the recipe's model (a fine-tune net over an
    EfficientNetV2 is that model, with its ``classifier.``)."""
    arch = getattr(recipe, "arch", None)
    if recipe.model == "finetune" and arch not in (None, "resnet34"):
        return HEADS[arch]
    return HEADS[check_model_name(recipe.model)]


def recipe_kwargs(recipe: Any, image_size: int | None = None) -> dict[str, Any]:
    """Keyword arguments of ``create_model(recipe.model, ...)`` taken from a competition recipe.

    Optional recipe fields (``drop_path``, ``stochastic_depth``, ``dropout``, ``freeze``,
    ``bn_momentum``) are used when the recipe has them and they are set. ``weights`` reaches
    the builder only as ``"imagenet"`` (or ``None``): a file is loaded by :func:`build_net`,
    the same way for every model.
    """
    name = check_model_name(recipe.model)
    opt = lambda k: getattr(recipe, k, None)  # noqa: E731
    builder_weights = None if weights_file(recipe.weights) else recipe.weights
    kw: dict[str, Any] = {}
    if name == "resnet18":
        kw = {"in_channels": 3, "width": recipe.width}
        if opt("drop_path"):
            kw["drop_path"] = opt("drop_path")
        if opt("bn_momentum") is not None:
            kw["bn_momentum"] = opt("bn_momentum")
    elif name == "airbench94":
        kw = {"width": recipe.width}
        if opt("bn_momentum") is not None:
            kw["bn_momentum"] = opt("bn_momentum")
    elif name == "resnet34":
        if opt("drop_path"):
            kw["drop_path"] = opt("drop_path")
    elif name == "finetune":
        kw = {"weights": builder_weights, "hidden": recipe.hidden}
        for k in ("arch", "freeze"):
            if opt(k) is not None:
                kw[k] = opt(k)
    elif name == "cnn_elu":
        if image_size:
            kw["image_size"] = int(image_size)
        if opt("dropout") is not None:
            kw["dropout"] = opt("dropout")
    else:   # EfficientNetV2
        kw = {"weights": builder_weights}
        for k in ("stochastic_depth", "dropout"):
            if opt(k) is not None:
                kw[k] = opt(k)
    return kw


def start_weights(backend: Any, recipe: Any, num_classes: int | None = None,
                  image_size: int | None = None, net: Any = None) -> StartWeights | None:
    """How the recipe's ``weights`` file starts its model (``None`` without a file): read
    the file, compare it with the model's names and shapes (``net``, or one built here for
    ``num_classes``; ``None``: as many as the file's classifier has) and decide — or raise
    ``ValueError`` naming the first name or shape that fits nothing. ``backend`` may be a
    backend's name: it is imported only after the file was read."""
    path = weights_file(getattr(recipe, "weights", None))
    if path is None:
        return None
    path = os.path.abspath(path)
    state = read_weights(path)
    if isinstance(backend, str):
        backend = get_backend(backend)
    head = head_of(recipe)
    if net is None:
        if num_classes is None:   # the file's own classes (a check before the data is read)
            rows = [v.shape[0] for k, v in state.items() if k.startswith(head) and v.ndim == 2]
            num_classes = rows[-1] if rows else 2
        net = backend.create_model(recipe.model, num_classes, **recipe_kwargs(recipe, image_size))
    expected = {k: tuple(v.shape) for k, v in backend.get_state(net).items()}
    state, parts, keep, note = match_weights(expected, state, head, source=f"--weights {path}",
                                             model=recipe.model,
                                             drop=BACKBONE_CLASSIFIERS.get(recipe.model, ()))
    return StartWeights(path, sha1(path), parts, state, keep, note)


def build_net(backend: Any, recipe: Any, num_classes: int, image_size: int | None = None,
              start: StartWeights | None = None) -> Any:
    """The recipe's model in ``backend`` (a backend module), by its model-table name: the
    book's ResNet-18, the ResNet-34 fine-tune net, cnn_elu, EfficientNetV2 ... (the chapters'
    ``get_net`` step), started from the recipe's weights file when it names one (``start``:
    that file already read by :func:`start_weights`)."""
    net = backend.create_model(recipe.model, num_classes, **recipe_kwargs(recipe, image_size))
    if start is None:
        start = start_weights(backend, recipe, num_classes, image_size, net=net)
    if start is not None:
        backend.set_state(net, start.state, source=f"--weights {start.file}",
                          allow_missing=start.keep)
    return net
