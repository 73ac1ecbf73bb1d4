"""d2lkaggle: Kaggle image classification from raw files to submission.csv.

The core (every subpackage but the wings) imports no framework; the wings ``torch_impl``,
``mxnet_impl`` and ``paddle_impl`` are loaded only when asked for (:func:`get_backend`, or
an import of the wing). The map of the rooms is docs/architecture.md.
"""
__version__ = "0.2.0"

from . import _moved  # noqa: E402
from .data.hub import DATA_HUB, DATA_URL, download, download_extract, extract  # noqa: E402
from .data.labels import read_csv_labels  # noqa: E402
from .data.reorg import reorg_test, reorg_train_valid  # noqa: E402
from .data.splits import split_train_valid  # noqa: E402
from .utils.registry import backends, get_backend  # noqa: E402

_moved.install()   # the flat core's old import paths keep working for one release

__all__ = [
    "__version__", "backends", "get_backend", "DATA_HUB", "DATA_URL", "download",
    "download_extract", "extract", "read_csv_labels", "reorg_train_valid", "reorg_test",
    "split_train_valid",
]
