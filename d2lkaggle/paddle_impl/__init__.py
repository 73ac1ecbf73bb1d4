"""PaddlePaddle backend: the chapters' models, training, prediction and weights.

Only framework code lives here; the loop, data, schedules and submissions are in the core.

CPU speed (measured in ``benchmarks/paddle_speed.py``). Paddle 3.3's eager CPU kernels are
slow; unless ``D2LKAGGLE_PADDLE_FAST=0`` this backend, at import, when the user has not
chosen otherwise:

* uses every available core: Paddle pins OpenMP/MKL to one thread when ``OMP_NUM_THREADS``
  is unset (``D2LKAGGLE_PADDLE_THREADS=N`` picks the count; an ``OMP_NUM_THREADS`` set
  before import is kept). Paddle's own ``OMP_NUM_THREADS=1`` in ``os.environ`` is undone
  so child processes are not pinned either;
* on AMD CPUs sets ``MKL_DEBUG_CPU_TYPE=5`` when unset: Paddle's MKL (mklml) otherwise runs a
  generic code path there (its GEMMs ~2.4x slower). MKL reads it at its first call, so it
  must not have run yet; only this process's MKL and its children see it.

A static program (``paddle.jit.to_static``) with oneDNN kernels was measured too: no faster
than eager here (11.7 vs 18.5 examples/s) and it crashed on the fine-tune net, so the step
stays eager.

Nothing else global is changed but two warning filters for Paddle's own known, harmless
messages (see ``_quiet_known_warnings``): no blanket filter, no signal handlers.
"""
import os as _os
import sys as _sys


def _flag(name: str, default: bool = True) -> bool:
    v = _os.environ.get(name)
    return default if v is None else v.strip().lower() not in ("0", "false", "no", "off", "")


def _is_amd() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return "AuthenticAMD" in line
    except OSError:
        pass
    return False


def _cores() -> int:
    try:
        return len(_os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return _os.cpu_count() or 1


#: the speed levers are on unless D2LKAGGLE_PADDLE_FAST=0 (read once, at import)
FAST = _flag("D2LKAGGLE_PADDLE_FAST")

# when paddle is already imported, its OMP_NUM_THREADS=1 can't be told from the user's
_threads_unset = "OMP_NUM_THREADS" not in _os.environ and "paddle" not in _sys.modules
if FAST and "MKL_DEBUG_CPU_TYPE" not in _os.environ and _is_amd():
    _os.environ["MKL_DEBUG_CPU_TYPE"] = "5"


def _quiet_known_warnings() -> None:
    """Silence two messages Paddle prints on every run, and only those (matched by text and
    module): "No ccache found" (at import, from its C++-extension builder, which this
    library never uses) and BatchNorm's "When training, we now always track global mean
    and variance." (every training forward; it describes Paddle's normal behaviour and
    lands inside the progress bars). Paddle reads no variable to turn either off."""
    import warnings
    warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning,
                            module=r"paddle\.utils\.cpp_extension")
    warnings.filterwarnings("ignore", message="When training, we now always track global mean",
                            category=UserWarning, module=r"paddle\.nn\.layer\.norm")


_quiet_known_warnings()

import paddle  # noqa: E402  (fail early, with the registry's message, when paddle is missing)


def _set_threads() -> int | None:
    n = _os.environ.get("D2LKAGGLE_PADDLE_THREADS")
    if n is None and not (FAST and _threads_unset):
        return None
    n = max(1, int(n)) if n else _cores()
    if hasattr(paddle.base.core, "set_num_threads"):
        paddle.base.core.set_num_threads(n)
    return n


if FAST and _threads_unset and _os.environ.get("OMP_NUM_THREADS") == "1":
    # Paddle's pin, not the user's: keep children free (and OpenMP, which reads it at its
    # first parallel region, after this import)
    del _os.environ["OMP_NUM_THREADS"]
#: OpenMP/MKL threads this backend set (None: left to Paddle / the user)
THREADS = _set_threads()

from .data import to_labels, to_tensor  # noqa: E402
from .models import (Airbench94, airbench94, CnnElu, EfficientNetV2, FineTuneNet, Residual, ResNet18, cnn_elu,  # noqa: E402
                     create_model, efficientnet_v2_l, efficientnet_v2_m, efficientnet_v2_s,
                     finetune_net, list_models, resnet18, resnet34)
from .device import SUPPORTS_BF16, set_seed, try_all_gpus, try_gpu  # noqa: E402
from .train import (PaddleStep as Step, evaluate_accuracy, evaluate_loss,  # noqa: E402
                    forward, lr_find, predict, train)
from .weights import get_state, load_weights, save_weights, set_state  # noqa: E402

NAME = "paddle"

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
