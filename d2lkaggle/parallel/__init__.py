"""parallel — data parallelism without a framework: who am I among the ranks, which examples are mine,
how each backend's launcher is started (torchrun, Paddle's, MXNet's ps-lite).

May import: utils.
"""
from ..utils.exports import lazy_exports

#: public name -> the module of this room that defines it
EXPORTS = {
    "DistEnv": "distributed",
    "detect": "distributed",
    "shard": "distributed",
    "shard_batch": "distributed",
    "unsharded": "distributed",
    "setup": "distributed",
    "barrier": "distributed",
    "launch_command": "distributed",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
