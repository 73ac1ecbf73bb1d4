"""PyTorch backend: the chapters' models, training, prediction and weights.

Only framework code lives here; the loop, data, schedules and submissions are in the core.
"""
import torch  # noqa: F401  (fail early, with the registry's message, when torch is missing)

from .data import to_labels, to_tensor
from .models import FineTuneNet, Residual, ResNet18, finetune_net, resnet18, resnet34
from .train import (SUPPORTS_BF16, TorchStep as Step, evaluate_accuracy, evaluate_loss, forward,
                    predict, set_seed, train, try_all_gpus, try_gpu)
from .weights import get_state, load_weights, save_weights, set_state

NAME = "torch"

__all__ = ["NAME", "SUPPORTS_BF16", "Step", "Residual", "ResNet18", "FineTuneNet", "resnet18",
           "resnet34", "finetune_net", "train", "evaluate_accuracy", "evaluate_loss", "predict",
           "forward", "try_gpu", "try_all_gpus", "set_seed", "to_tensor", "to_labels",
           "save_weights", "load_weights", "get_state", "set_state"]

# the lr finder (issue 16): a thin wrapper over the core lrfind module
from .train import lr_find  # noqa: E402

__all__ += ["lr_find"]
