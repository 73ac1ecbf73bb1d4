"""common — framework-free code every wing shares: the book's ``Timer``, ``Accumulator``,
``Animator``, the tensor loader of hand-written loops, the chapters' argument orders and
what the CPU can do (native bf16).

May import: utils, parallel, data, train, models, specs. The wings (``torch_impl``,
``mxnet_impl``, ``paddle_impl``) sit above it and may import everything up to here.
"""
from ..utils.exports import lazy_exports

#: public name -> the module of this room that defines it
EXPORTS = {
    "Timer": "book",
    "Accumulator": "book",
    "Animator": "book",
    "TensorLoader": "book",
    "native_bf16": "cpu",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
