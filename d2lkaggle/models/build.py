"""A recipe's model, built in a backend: the model-table name and keywords a recipe gives.

The step between a :class:`~d2lkaggle.specs.recipe.Recipe` (values) and a backend's
``create_model`` (framework code): :func:`recipe_kwargs` picks the keywords that model takes,
:func:`build_net` calls the backend. A recipe is read by attribute, so this room needs nothing
from ``specs``.
"""
from __future__ import annotations

from typing import Any

from .table import check_model_name


def recipe_kwargs(recipe: Any, image_size: int | None = None) -> dict[str, Any]:
    """Keyword arguments of ``create_model(recipe.model, ...)`` taken from a competition recipe.

    Optional recipe fields (``drop_path``, ``stochastic_depth``, ``dropout``, ``freeze``,
    ``bn_momentum``) are used when the recipe has them and they are set.
    """
    name = check_model_name(recipe.model)
    opt = lambda k: getattr(recipe, k, None)  # noqa: E731
    kw: dict[str, Any] = {}
    if name == "resnet18":
        kw = {"in_channels": 3, "width": recipe.width}
        if opt("drop_path"):
            kw["drop_path"] = opt("drop_path")
        if opt("bn_momentum") is not None:
            kw["bn_momentum"] = opt("bn_momentum")
    elif name == "resnet34":
        if opt("drop_path"):
            kw["drop_path"] = opt("drop_path")
    elif name == "finetune":
        kw = {"weights": recipe.weights, "hidden": recipe.hidden}
        for k in ("arch", "freeze"):
            if opt(k) is not None:
                kw[k] = opt(k)
    elif name == "cnn_elu":
        if image_size:
            kw["image_size"] = int(image_size)
        if opt("dropout") is not None:
            kw["dropout"] = opt("dropout")
    else:   # EfficientNetV2
        kw = {"weights": recipe.weights}
        for k in ("stochastic_depth", "dropout"):
            if opt(k) is not None:
                kw[k] = opt(k)
    return kw


def build_net(backend: Any, recipe: Any, num_classes: int, image_size: int | None = None) -> Any:
    """The recipe's model in ``backend`` (a backend module), by its model-table name: the
    book's ResNet-18, the ResNet-34 fine-tune net, cnn_elu, EfficientNetV2 ... (the chapters'
    ``get_net`` step)."""
    return backend.create_model(recipe.model, num_classes, **recipe_kwargs(recipe, image_size))
