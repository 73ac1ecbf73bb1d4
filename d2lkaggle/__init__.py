"""d2lkaggle: Kaggle image classification from raw files to submission.csv.

The core (this package's top-level modules) uses only numpy, Pillow, pandas and matplotlib;
the frameworks live in ``torch_impl``, ``mxnet_impl`` and ``paddle_impl`` and are imported
only through :func:`get_backend`.
"""
__version__ = "0.1.0"

from .utils.registry import backends, get_backend  # noqa: E402
from .data.hub import DATA_HUB, DATA_URL, download, download_extract, extract  # noqa: E402
from .data.labels import read_csv_labels  # noqa: E402
from .data.reorg import reorg_test, reorg_train_valid, split_train_valid  # noqa: E402

__all__ = [
    "__version__", "backends", "get_backend", "DATA_HUB", "DATA_URL", "download",
    "download_extract", "extract", "read_csv_labels", "reorg_train_valid", "reorg_test",
    "split_train_valid",
]
