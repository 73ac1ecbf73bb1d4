"""models — architectures as data (the model table every wing builds from), a recipe's model, neutral
weight files, cross-framework parity, the whitened first layer.

May import: utils, parallel, data, train.
"""
from ..utils.exports import lazy_exports

#: public name -> the module of this room that defines it
EXPORTS = {
    "MODEL_NAMES": "table",
    "check_model_name": "table",
    "create": "table",
    "recipe_kwargs": "build",
    "build_net": "build",
    "save_neutral": "weights",
    "load_neutral": "weights",
    "read_weights": "weights",
    "convert": "weights",
    "run_parity": "parity",
    "patch_whitening": "whitening",
    "whiten_first_conv": "whitening",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS, fallback='table')
