"""PyTorch backend: the chapters' models, training, prediction and weights.

Only framework code lives here; the loop, data, schedules and submissions are in the core.
"""
import torch  # noqa: F401  (fail early, with the registry's message, when torch is missing)

from .data import to_labels, to_tensor
from .models import (Airbench94, airbench94, CnnElu, EfficientNetV2, FineTuneNet, Residual, ResNet18, cnn_elu, create_model,
                     efficientnet_v2_l, efficientnet_v2_m, efficientnet_v2_s, finetune_net,
                     list_models, resnet18, resnet34)
from .device import SUPPORTS_BF16, set_seed, try_all_gpus, try_gpu
from .train import (TorchStep as Step, evaluate_accuracy, evaluate_loss, forward, lr_find,
                    predict, train)
from .weights import get_state, load_weights, save_weights, set_state

NAME = "torch"

__all__ = ["NAME", "SUPPORTS_BF16", "Step", "Residual", "ResNet18", "FineTuneNet", "resnet18",
           "resnet34", "finetune_net", "train", "evaluate_accuracy", "evaluate_loss", "predict",
           "forward", "lr_find", "try_gpu", "try_all_gpus", "set_seed", "to_tensor", "to_labels",
           "save_weights", "load_weights", "get_state", "set_state",
           "CnnElu", "EfficientNetV2", "cnn_elu", "efficientnet_v2_s", "efficientnet_v2_m",
           "efficientnet_v2_l", "list_models", "create_model", "Airbench94", "airbench94"]


# the d2l names the two Kaggle chapters call (docs/from-the-book.md) and loaders as tensors
from .book import (DATA_HUB, DATA_URL, Accumulator, Animator, Timer, download,
                   download_extract, evaluate_accuracy_gpu, evaluate_accuracy_gpus, extract,
                   get_net, read_csv_labels, reorg_test, reorg_train_valid, split_batch,
                   train_batch_ch13)
from .data import tensors

__all__ += ["DATA_HUB", "DATA_URL", "Accumulator", "Animator", "Timer", "download",
            "download_extract", "evaluate_accuracy_gpu", "evaluate_accuracy_gpus", "extract",
            "get_net", "read_csv_labels", "reorg_test", "reorg_train_valid", "split_batch",
            "train_batch_ch13", "tensors"]
