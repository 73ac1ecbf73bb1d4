"""The framework-free half of the Paddle and MXNet data-parallel equivalence tests.

Each test writes ``HEAD + <its backend's net/step/weights> + TAIL`` to a script, runs it in 2
processes under the backend's launcher, and checks the ``result.json`` rank 0 writes with
:func:`check`. The backend part defines ``env`` (the launcher's DistEnv), ``net(shifted)``
(the same start in every process; ``shifted`` moves every weight by 1, for rank 1's start),
``make_step(net, dist)``, ``weights(step)`` (float64 parameters) and ``barrier()``.
"""
from __future__ import annotations

import json

import numpy as np

HEAD = r'''
import json, os, sys
import numpy as np
from d2lkaggle.parallel import distributed as D
from d2lkaggle.train import loop
from d2lkaggle.data.loader import ArraySource, ImageLoader

out = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (48, 8, 8, 3)).astype(np.uint8)
y = np.arange(48) % 4

def loaders(dist):
    tr = ImageLoader(ArraySource(x[:40]), y[:40], 8, shuffle=True, drop_last=True, seed=3,
                     mean=(0.5,) * 3, std=(0.25,) * 3, num_workers=1, dist=dist)
    va = ImageLoader(ArraySource(x[40:]), y[40:], 6, mean=tr.mean, std=tr.std, num_workers=1,
                     dist=dist)                 # 8 = 6 + 2: the ranks split a short batch
    return tr, va
'''

TAIL = r'''
assert env.world_size == 2, env

def train(dist, shards=None, start=None):
    tr, va = loaders(shards or dist)
    step = make_step(start if start is not None else net(False), dist, tr)
    h = loop.fit(step, tr, va, 3, lambda t: 0.1 * (1 - t / 4), progress=False, log=None,
                 checkpoint_dir=os.path.join(out, "ck" if dist else "ck1"))
    return step, h

# a different start on rank 1: the step must begin from rank 0's weights
step, h = train(env, start=net(env.rank == 1))
if env.is_main:
    ref, h1 = train(None)                    # one process, the same global batches
    alone, _ = train(None, shards=env)       # rank 0's shards without the gradient average
    dist_to = lambda a, b: max(float(np.abs(a[k] - b[k]).max()) for k in b)
    w, w1 = weights(step), weights(ref)
    cols = ("train_loss", "train_acc", "valid_loss", "valid_acc")
    json.dump({"diff": dist_to(w, w1), "unsynced": dist_to(weights(alone), w1),
               "moved": dist_to(w1, weights(make_step(net(False), None, loaders(None)[0]))),
               "world": env.world_size, "dtype": str(next(iter(w.values())).dtype),
               "hist": [h.column(c) for c in cols], "hist1": [h1.column(c) for c in cols],
               "files": sorted(os.listdir(os.path.join(out, "ck")))},
              open(os.path.join(out, "result.json"), "w"))
barrier()
'''


def script(backend_part: str) -> str:
    """The whole equivalence script around a backend's part."""
    return HEAD + backend_part + TAIL


def check(path) -> dict:
    """Assert on rank 0's ``result.json``: 2 processes trained as 1 (and the control did not)."""
    res = json.loads(open(path).read())
    assert res["world"] == 2 and res["dtype"] == "float64", res
    assert res["moved"] > 1e-3 and res["unsynced"] > 1e-3, res  # training moved the weights,
    # and one rank's shards alone lead elsewhere (the gradient average makes them agree) ...
    assert res["diff"] <= 1e-5, res               # ... the same way in 2 processes as in 1
    # every rank's metrics are the global ones: the one-process history
    np.testing.assert_allclose(res["hist"], res["hist1"], rtol=1e-6, atol=1e-9)
    assert res["files"] == ["best.npz", "last.npz"]   # rank 0 wrote the checkpoints
    print(f"max |w_2proc - w_1proc| = {res['diff']:.3g} (unsynced control {res['unsynced']:.3g})")
    return res
