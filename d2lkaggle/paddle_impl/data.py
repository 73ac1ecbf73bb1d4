"""uint8 NHWC batches from the core loader → normalised float tensors on a place."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import paddle


def to_tensor(x: np.ndarray, mean: Sequence[float], std: Sequence[float],
              device: "paddle.CPUPlace | str" = "cpu", channels_last: bool = True) -> paddle.Tensor:
    """Convert an N×H×W×3 uint8 batch to a normalised N×3×H×W float32 tensor on ``device``.

    ``channels_last`` is accepted for the shared signature; NHWC measured no faster here.
    """
    place = paddle.CPUPlace() if device in (None, "cpu") else device
    std_ = np.asarray(std, dtype=np.float32)
    # normalise in numpy (one pass) before the copy: dygraph ops are costly on CPU
    xf = np.asarray(x, dtype=np.float32) * (1.0 / (255.0 * std_)) - np.asarray(mean, np.float32) / std_
    return paddle.to_tensor(np.ascontiguousarray(xf.transpose(0, 3, 1, 2)), place=place)


def to_labels(y: np.ndarray, device: "paddle.CPUPlace | str" = "cpu") -> paddle.Tensor:
    """int64 labels on ``device``."""
    place = paddle.CPUPlace() if device in (None, "cpu") else device
    return paddle.to_tensor(np.asarray(y, dtype=np.int64), place=place)
