"""MXNet (Gluon) backend: the chapters' models, training, prediction and weights.

Only framework code lives here; the loop, data, schedules and submissions are in the core.
Blocks use numpy semantics (``npx.set_np()``) and are hybridized for training.
"""
import os
import sys


def _physical_cores() -> int | None:
    """Physical cores among the CPUs this process may run on (None when unknown)."""
    try:
        cpus = os.sched_getaffinity(0)
        cores = set()
        for c in cpus:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        return len(cores) or None
    except (AttributeError, OSError):
        return None


def _set_threads() -> None:
    """Give MXNet's operators one OpenMP thread per physical core.

    Without OMP_NUM_THREADS, MXNet 1.9 takes ``omp_get_num_procs()``, halves it on x86
    (assuming two hyper-threads per core) and calls ``omp_set_num_threads`` with that: on a
    2-core VM without SMT every convolution ran on ONE thread (measured: one busy thread).
    ``MXNET_OMP_MAX_THREADS`` fixes the count without that process-wide call, which is also
    what dropped an already imported torch to one thread. Only when the user set neither
    variable, and only before mxnet is first imported (later it has no effect).
    """
    if "mxnet" in sys.modules or "OMP_NUM_THREADS" in os.environ \
            or "MXNET_OMP_MAX_THREADS" in os.environ:
        return
    n = _physical_cores()
    if n:
        os.environ["MXNET_OMP_MAX_THREADS"] = str(n)


_set_threads()

import mxnet  # noqa: E402,F401  (fail early, with the registry's message, when mxnet is missing)
from mxnet import npx  # noqa: E402

npx.set_np()

from .data import to_labels, to_tensor  # noqa: E402
from .models import (Airbench94, airbench94, CnnElu, EfficientNetV2, FineTuneNet, Residual, ResNet18, cnn_elu,  # noqa: E402
                     create_model, efficientnet_v2_l, efficientnet_v2_m, efficientnet_v2_s,
                     finetune_net, list_models, resnet18, resnet34)
from .device import SUPPORTS_BF16, set_seed, try_all_gpus, try_gpu  # noqa: E402
from .train import (MXNetStep as Step, evaluate_accuracy, evaluate_loss,  # noqa: E402
                    forward, lr_find, predict, train)
from .weights import get_state, load_weights, save_weights, set_state  # noqa: E402

NAME = "mxnet"

__all__ = ["NAME", "SUPPORTS_BF16", "Step", "Residual", "ResNet18", "FineTuneNet", "resnet18",
           "resnet34", "finetune_net", "train", "evaluate_accuracy", "evaluate_loss", "predict",
           "forward", "lr_find", "try_gpu", "try_all_gpus", "set_seed", "to_tensor", "to_labels",
           "save_weights", "load_weights", "get_state", "set_state",
           "CnnElu", "EfficientNetV2", "cnn_elu", "efficientnet_v2_s", "efficientnet_v2_m",
           "efficientnet_v2_l", "list_models", "create_model", "Airbench94", "airbench94"]


# the d2l names the two Kaggle chapters call (docs/from-the-book.md) and loaders as tensors
from .book import (DATA_HUB, DATA_URL, Accumulator, Animator, Timer, download,  # noqa: E402
                   download_extract, evaluate_accuracy_gpu, evaluate_accuracy_gpus, extract,
                   get_net, read_csv_labels, reorg_test, reorg_train_valid, split_batch,
                   train_batch_ch13)
from .data import tensors  # noqa: E402

__all__ += ["DATA_HUB", "DATA_URL", "Accumulator", "Animator", "Timer", "download",
            "download_extract", "evaluate_accuracy_gpu", "evaluate_accuracy_gpus", "extract",
            "get_net", "read_csv_labels", "reorg_test", "reorg_train_valid", "split_batch",
            "train_batch_ch13", "tensors"]
