"""train — the one training loop and what it drives: optimizers, schedules, diagnostics, TTA, the lr
finder, cached backbone features, the pictures of a history.

May import: utils, parallel, data.
"""
from ..utils.exports import lazy_exports

#: public name -> the module of this room that defines it
EXPORTS = {
    "fit": "loop",
    "History": "loop",
    "evaluate": "loop",
    "predict": "loop",
    "train_net": "loop",
    "Callback": "callbacks",
    "constant": "schedules",
    "step_lr": "schedules",
    "multistep": "schedules",
    "cyclic": "schedules",
    "onecycle": "schedules",
    "cosine": "schedules",
    "plateau": "schedules",
    "OptimizerSpec": "optim",
    "make_spec": "optim",
    "predict_tta": "tta",
    "tta_batches": "tta",
    "lr_find": "lrfind",
    "LRFinderResult": "lrfind",
    "not_learning": "diagnostics",
    "train_with_cached_features": "features",
    "plot_history": "plotting",
    "plot_run": "plotting",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
