"""utils — the ground floor: atomic files and checkpoints' ``.npz``, progress output, the backend registry.

May import: the standard library, numpy, tqdm, filelock — nothing of d2lkaggle's other rooms.
"""
from .exports import lazy_exports

#: public name -> the module of this room that defines it
EXPORTS = {
    "get_backend": "registry",
    "backends": "registry",
    "backend_module": "registry",
    "canonical_name": "registry",
    "is_installed": "registry",
    "atomic_write_text": "files",
    "atomic_open": "files",
    "atomic_path": "files",
    "file_lock": "files",
    "save_npz": "files",
    "load_npz": "files",
    "sha1": "files",
    "file_hash": "files",
    "RunProgress": "progress",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
