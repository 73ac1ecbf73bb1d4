"""A pickle's opcode stream checked before it is unpickled (``.pth``/``.pt``, ``.pdparams``).

The restricted unpicklers of :mod:`d2lkaggle.models.formats` decide which names a file may
call; what they cannot decide is the shape of the stream itself, and two shapes hurt the
process before any name is looked up: a memo index of 10**8 (``LONG_BINPUT``: CPython's
unpickler grows its memo table to that size, 1.6 GB for 139 bytes) and objects nested
200,000 deep (hashing such a key crashes the interpreter with a signal). :func:`check_stream`
walks the stream with :func:`pickletools.genops` — which parses without building anything —
and simulates the unpickler's stack with each opcode's own stack effect from
:mod:`pickletools`, keeping for every object only how deep it nests. It refuses, in one
line, a memo index beyond the opcodes read so far (a pickler numbers its memo 0, 1, 2 ...),
a memo read of an entry never stored, nesting deeper than :data:`MAX_DEPTH`, an opcode
without the objects it consumes, extension-registry codes and a stream that ends early
(genops' own parse errors).
"""
from __future__ import annotations

import pickletools
from typing import Callable

__all__ = ["check_stream", "MAX_DEPTH"]

#: how deep a state dict's objects may nest (a tensor in a dict of dicts is about 6 levels)
MAX_DEPTH = 64

#: opcodes that change the object under them (the list, dict, set or instance stays itself)
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET = {"GET", "BINGET", "LONG_BINGET"}
#: the extension registry (copyreg) names callables by number: nothing a state dict holds
_REFUSED = {"EXT1", "EXT2", "EXT4"}
_MARK = -1


def check_stream(data: bytes, refuse: Callable[[str], Exception],
                 max_depth: int = MAX_DEPTH) -> None:
    """Raise ``refuse(why)`` unless ``data`` is a well-formed pickle whose memo indices and
    nesting are bounded (see the module docstring); builds no object of the pickle."""
    stack: list[int] = []     # per object on the unpickler's stack: how deep it nests
    marks: list[int] = []     # where each MARK sits in ``stack``
    memo: dict[int, int] = {}
    for n, (op, arg, pos) in enumerate(_opcodes(data, refuse)):
        name = op.name
        if name in _REFUSED:
            raise refuse(f"opcode {name} at byte {pos} (an extension-registry code)")
        before = op.stack_before
        if pickletools.markobject in before:
            below = before.index(pickletools.markobject)
            if not marks:
                raise refuse(f"opcode {name} at byte {pos} without its MARK")
            m = marks.pop()
            popped = stack[m + 1:]
            del stack[m:]
        else:
            below, popped = len(before), []
        floor = marks[-1] + 1 if marks else 0
        if len(stack) - floor < below:
            raise refuse(f"opcode {name} at byte {pos} finds {len(stack) - floor} of the "
                         f"{below} objects it takes")
        if below:
            popped = stack[len(stack) - below:] + popped
            del stack[len(stack) - below:]
        if name == "MARK":
            marks.append(len(stack))
            stack.append(_MARK)
            continue
        if name in _PUT or name == "MEMOIZE":
            index = len(memo) if name == "MEMOIZE" else arg
            if not isinstance(index, int) or index < 0 or index > n:
                raise refuse(f"memo index {index} at byte {pos}, after {n} opcodes (a "
                             "pickler numbers its memo 0, 1, 2 ...)")
            if name == "MEMOIZE":
                stack.extend(popped)
                memo[index] = popped[0]
            elif len(stack) <= floor:
                raise refuse(f"opcode {name} at byte {pos} with nothing to store")
            else:
                memo[index] = stack[-1]
            continue
        if name in _GET:
            if arg not in memo:
                raise refuse(f"memo entry {arg} read at byte {pos} was never stored")
            stack.append(memo[arg])
            continue
        if name == "STOP":   # (genops stops after it, and refuses a stream without one)
            continue
        if name in _IN_PLACE:
            depth = max(popped[0], 1 + max(popped[1:], default=0))
        elif name == "DUP":
            depth = popped[0]
        else:
            depth = 1 + max(popped, default=-1)
        if depth > max_depth:
            raise refuse(f"objects nested more than {max_depth} deep at byte {pos} (a state "
                         "dict nests a few levels)")
        stack.extend([depth] * len(op.stack_after))


def _opcodes(data: bytes, refuse: Callable[[str], Exception]):
    """:func:`pickletools.genops` with its parse errors (an unknown opcode, an argument past
    the end, text that is not UTF-8) as refusals."""
    ops = pickletools.genops(data)
    while True:
        try:
            item = next(ops)
        except StopIteration:
            return
        except (ValueError, OverflowError) as e:
            raise refuse(f"not a well-formed pickle ({e})") from None
        yield item
