"""PaddlePaddle backend: the chapters' models, training, prediction and weights.

Only framework code lives here; the loop, data, schedules and submissions are in the core.
"""
import os as _os

# Paddle pins OMP_NUM_THREADS to 1 at import when it is unset, which costs ~35 % of CPU
# training speed on 2 cores (benchmarks/paddle_speed.py); a value the user set is kept.
_user_threads = _os.environ.get("OMP_NUM_THREADS")

import paddle  # noqa: E402  (fail early, with the registry's message, when paddle is missing)

if _user_threads is None and hasattr(paddle.base.core, "set_num_threads"):
    paddle.base.core.set_num_threads(int(_os.environ.get("D2LKAGGLE_PADDLE_THREADS",
                                                         _os.cpu_count() or 1)))

from .data import to_labels, to_tensor  # noqa: E402
from .models import FineTuneNet, Residual, ResNet18, finetune_net, resnet18, resnet34  # noqa: E402
from .train import (SUPPORTS_BF16, PaddleStep as Step, evaluate_accuracy, evaluate_loss,  # noqa: E402
                    forward, predict, set_seed, train, try_all_gpus, try_gpu)
from .weights import get_state, load_weights, save_weights, set_state  # noqa: E402

NAME = "paddle"

__all__ = ["NAME", "SUPPORTS_BF16", "Step", "Residual", "ResNet18", "FineTuneNet", "resnet18",
           "resnet34", "finetune_net", "train", "evaluate_accuracy", "evaluate_loss", "predict",
           "forward", "try_gpu", "try_all_gpus", "set_seed", "to_tensor", "to_labels",
           "save_weights", "load_weights", "get_state", "set_state"]
