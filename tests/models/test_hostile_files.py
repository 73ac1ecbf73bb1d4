"""Weight files crafted to hurt the reader: each is refused by `d2lkaggle weights convert` with
one line (the file, the format, what is wrong, what to do) and exit 2 by a normal exit, writes
no output, and keeps the reading process under 600 MB (measured in that process).

The files are built here, byte by byte, a few hundred bytes to a few MB each: a small pickle
assembler for .pth/.pdparams, MXNet's NDArray layout, .npz and .safetensors by hand.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from conftest import run_py
from d2lkaggle.models.formats import UnsafeWeightsError, read_torch_zip
from d2lkaggle.models.weights import read_weights

#: peak resident memory the reading process may reach (the CLI itself takes ~100 MB)
RSS_LIMIT_MB = 600

# ----------------------------------------------------------------------------- a pickle assembler


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def text(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def raw(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b


def num(n: int) -> bytes:
    e = pickle.encode_long(n)
    return b"\x8a" + bytes([len(e)]) + e


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def dict_of(entries: dict[str, bytes]) -> bytes:
    return b"\x80\x02}(" + b"".join(text(k) + v for k, v in entries.items()) + b"u."


def tensor(key: str, numel: int, offset: int, size: tuple, stride: tuple,
           storage: str = "FloatStorage") -> bytes:
    """torch._utils._rebuild_tensor_v2 of a storage record, as torch.save writes it."""
    pid = tup(text("storage"), glob("torch", storage), text(key), text("cpu"), num(numel)) + b"Q"
    return glob("torch._utils", "_rebuild_tensor_v2") + tup(
        pid, num(offset), tup(*map(num, size)), tup(*map(num, stride)), b"\x89",
        glob("collections", "OrderedDict") + b")R") + b"R"


def pth(path, pkl: bytes, storages: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("t/data.pkl", pkl)
        z.writestr("t/byteorder", "little")
        for key, data in storages.items():
            z.writestr(zipfile.ZipInfo(f"t/data/{key}"), data)
    return str(path)


def deep_key(depth: int, value: bytes) -> bytes:
    """A dict whose one key is a tuple nested ``depth`` deep."""
    return b"\x80\x02}K\x00" + b"\x85" * depth + value + b"s."


MEMO_BOMB = b"\x80\x02}r" + struct.pack("<I", 10 ** 8) + b"."   # LONG_BINPUT 100,000,000


def np_dtype(code: str = "f4") -> bytes:
    return glob("numpy", "dtype") + tup(text(code), b"\x89", b"\x88") + b"R" + tup(
        num(3), text("<"), b"N", b"N", b"N", num(-1), num(-1), num(0)) + b"b"


def np_array(shape: tuple, dtype: bytes, data: bytes | None, state_dtype: bytes | None = None,
             data_op: bytes | None = None) -> bytes:
    """numpy's own pickle of an array: _reconstruct, then BUILD with (1, shape, dtype, F, bytes)
    (``data_op``: another object in place of the bytes)."""
    made = glob("numpy.core.multiarray", "_reconstruct") + tup(
        glob("numpy", "ndarray"), tup(num(0)), raw(b"b")) + b"R"
    if data is None and data_op is None:   # no state: an ndarray without a buffer of its own
        return made
    return made + tup(num(1), tup(*map(num, shape)), state_dtype or dtype, b"\x89",
                      data_op or raw(data)) + b"b"


def mx_params(path, arrays: list[tuple[tuple, int, bytes]], names: list[str]) -> str:
    """MXNet's NDArray file: (shape, type flag, data) per array, then the names."""
    out = struct.pack("<QQQ", 0x112, 0, len(arrays))
    for shape, flag, data in arrays:
        out += struct.pack("<Iii", 0xF993FAC9, 0, len(shape)) + struct.pack(f"<{len(shape)}q", *shape)
        out += struct.pack("<iii", 1, 0, flag) + data
    out += struct.pack("<Q", len(names)) + b"".join(struct.pack("<Q", len(n)) + n.encode()
                                                     for n in names)
    with open(path, "wb") as f:
        f.write(out)
    return str(path)


def npy(header: dict, data: bytes) -> bytes:
    h = repr(header).encode()
    h += b" " * (-(len(h) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + data


def npz(path, members: dict[str, bytes], deflate: bool = False) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return str(path)


def declare_size(path: str, member: str, size: int) -> str:
    """Rewrite a zip member's declared uncompressed size (local header and central directory)."""
    blob = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    struct.pack_into("<I", blob, info.header_offset + 22, size)
    central = blob.find(b"PK\x01\x02")
    while central >= 0:
        n = struct.unpack_from("<H", blob, central + 28)[0]
        if blob[central + 46:central + 46 + n].decode() == member:
            struct.pack_into("<I", blob, central + 24, size)
        central = blob.find(b"PK\x01\x02", central + 4)
    open(path, "wb").write(bytes(blob))
    return path


def inflating_npz(path, mb: int) -> str:
    """An .npz whose one float32 array of zeros inflates ``mb`` MiB from about mb KB."""
    header = npy({"descr": "<f4", "fortran_order": False, "shape": (mb << 18,)}, b"")
    info = zipfile.ZipInfo("w.npy")
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w") as z, z.open(info, "w") as f:
        f.write(header)
        zeros = bytes(1 << 20)
        for _ in range(mb):
            f.write(zeros)
    return str(path)


def safetensors_file(path, header: dict, data: bytes = b"", length: int | None = None) -> str:
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h) if length is None else length) + h + data)
    return str(path)


# ----------------------------------------------------------------------------- the files

F4 = struct.pack("<4f", 1, 2, 3, 4)
EIGHT_MB = bytes(8 << 20)


def _craft(name: str, d) -> str:
    """Each hostile file of the issue, and more."""
    p = lambda suffix: os.path.join(d, name + suffix)  # noqa: E731
    if name == "stride_past_storage":      # exit 0 with this process's heap in the output
        return pth(p(".pth"), dict_of({"w": tensor("0", 4, 0, (4,), (4096,))}), {"0": F4})
    if name == "negative_stride":          # read before the buffer
        return pth(p(".pth"), dict_of({"w": tensor("0", 4, 3, (4,), (-1,))}), {"0": F4})
    if name == "offset_past_storage":      # silently dropped: wrong values
        return pth(p(".pth"), dict_of({"w": tensor("0", 4, 9, (2,), (1,))}), {"0": F4})
    if name == "stride_2_40":              # SIGSEGV
        return pth(p(".pth"), dict_of({"w": tensor("0", 4, 0, (2,), (2 ** 40,))}), {"0": F4})
    if name == "shape_past_int64":         # a product no int64 holds
        return pth(p(".pth"), dict_of({"w": tensor("0", 4, 0, (2 ** 40, 2 ** 40), (0, 0))}), {"0": F4})
    if name == "stride0_bomb":             # (3e8,) over 1 float: 1.2 GB from 659 bytes
        return pth(p(".pth"), dict_of({"w": tensor("0", 1, 0, (300_000_000,), (0,))}), {"0": F4[:4]})
    if name == "storage_viewed_400_times":  # one 8 MB storage, 400 tensors over it
        entries = {f"w{k}": tensor("0", 2 << 20, 0, (2 << 20,), (1,)) for k in range(400)}
        return pth(p(".pth"), dict_of(entries), {"0": EIGHT_MB})
    if name == "pth_nested_200000":        # SIGSEGV while hashing the key
        return pth(p(".pth"), deep_key(200_000, num(1)), {})
    if name == "pth_memo_1e8":             # 1.6 GB before the refusal
        return pth(p(".pth"), MEMO_BOMB, {})
    if name == "pth_memo_never_stored":
        return pth(p(".pth"), b"\x80\x02}h\x05.", {})
    if name == "pth_storage_missing":
        return pth(p(".pth"), dict_of({"w": tensor("7", 4, 0, (4,), (1,))}), {"0": F4})
    if name == "pth_storage_size_lies":    # 10**12 elements declared over 16 bytes
        return pth(p(".pth"), dict_of({"w": tensor("0", 10 ** 12, 0, (4,), (1,))}), {"0": F4})
    if name == "pth_truncated":
        return pth(p(".pth"), dict_of({"w": tensor("0", 4, 0, (4,), (1,))})[:-20], {"0": F4})
    if name == "pth_extension_code":
        return pth(p(".pth"), b"\x80\x02\x82\x01.", {})
    if name == "pth_storage_inflates":     # a storage that inflates 1000x (a zip bomb)
        path = p(".pth")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("t/data.pkl", dict_of({"w": tensor("0", 64 << 20, 0, (4,), (1,))}))
            info = zipfile.ZipInfo("t/data/0")
            info.compress_type = zipfile.ZIP_DEFLATED
            with z.open(info, "w") as f:
                for _ in range(256):
                    f.write(bytes(1 << 20))
        return path
    if name == "pdparams_nested_200000":
        return _write(p(".pdparams"), deep_key(200_000, num(1)))
    if name == "pdparams_memo_1e8":
        return _write(p(".pdparams"), MEMO_BOMB)
    if name == "pdparams_15000x15000":     # 92 bytes declaring 1.8 GB, no data
        return _write(p(".pdparams"), dict_of({"w": glob("numpy.core.multiarray", "_reconstruct")
                                               + tup(glob("numpy", "ndarray"),
                                                     tup(num(15000), num(15000)), text("f8"))
                                               + b"R"}))
    if name == "pdparams_shape_without_bytes":   # the state declares 15000x15000, gives 8 bytes
        return _write(p(".pdparams"), dict_of({"w": np_array((15000, 15000), np_dtype("f8"),
                                                            bytes(8))}))
    if name == "pdparams_object_dtype_string":   # _reconstruct(ndarray, shape, "O"): NaN weights
        return _write(p(".pdparams"), dict_of({"w": np_array((2,), np_dtype(), bytes(16),
                                                            state_dtype=text("O"))}))
    if name == "pdparams_object_dtype":
        return _write(p(".pdparams"), dict_of({"w": np_array((2,), np_dtype("O"), bytes(16))}))
    if name == "pdparams_no_buffer":       # uninitialised heap
        return _write(p(".pdparams"), dict_of({"w": np_array((4,), np_dtype(), None)}))
    if name == "pdparams_list_as_data":
        return _write(p(".pdparams"), dict_of({"w": np_array((2,), np_dtype(), None,
                                                            data_op=b"]")}))
    if name == "pdparams_frombuffer_lies":  # protocol 5's form with a shape its bytes lack
        return _write(p(".pdparams"), dict_of({"w": glob("numpy.core.numeric", "_frombuffer")
                                               + tup(raw(bytes(8)), np_dtype(),
                                                     tup(num(10 ** 6)), text("C")) + b"R"}))
    if name == "params_shape_past_int64":  # numpy's "cannot reshape" without the file's name
        return mx_params(p(".params"), [((2 ** 33, 2 ** 33, 4), 0, b"")], ["w"])
    if name == "params_huge_shape":        # 15000x15000 floats declared in a small file
        return mx_params(p(".params"), [((15000, 15000), 0, F4)], ["w"])
    if name == "params_name_twice":        # the second won silently
        return mx_params(p(".params"), [((1,), 0, F4[:4]), ((1,), 0, F4[4:8])], ["w", "w"])
    if name == "npz_inflates":             # 256 MiB of zeros from 260 kB (the 1.6 GB)
        return inflating_npz(p(".npz"), 256)
    if name == "npz_declares_1_6_gb":      # a member that says it inflates to 1.6 GB
        path = npz(p(".npz"), {"w.npy": npy({"descr": "<f4", "fortran_order": False,
                                             "shape": (4,)}, F4)}, deflate=True)
        return declare_size(path, "w.npy", 1_600_000_000)
    if name == "npz_shape_without_bytes":
        return npz(p(".npz"), {"w.npy": npy({"descr": "<f8", "fortran_order": False,
                                             "shape": (15000, 15000)}, F4)})
    if name == "npz_string_dtype":
        return npz(p(".npz"), {"w.npy": npy({"descr": "<U4", "fortran_order": False,
                                             "shape": (1,)}, bytes(16))})
    if name == "npz_object_array":
        return npz(p(".npz"), {"w.npy": npy({"descr": "|O", "fortran_order": False,
                                             "shape": (1,)}, pickle.dumps([1]))})
    if name == "npz_huge_header":
        return npz(p(".npz"), {"w.npy": b"\x93NUMPY\x02\x00" + struct.pack("<I", 2 ** 31) + b"{"})
    if name == "safetensors_past_the_file":
        return safetensors_file(p(".safetensors"), {"w": {"dtype": "F32", "shape": [15000, 15000],
                                                          "data_offsets": [0, 900_000_000]}}, F4)
    if name == "safetensors_header_length":
        return safetensors_file(p(".safetensors"), {}, length=2 ** 60)
    if name == "safetensors_bf16":
        return safetensors_file(p(".safetensors"), {"w": {"dtype": "BF16", "shape": [2],
                                                          "data_offsets": [0, 4]}}, F4[:4])
    raise KeyError(name)


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


#: file -> (format named in the line, words of the reason)
HOSTILE = {
    "stride_past_storage": ("PyTorch", "reaches element 12288 of a storage of 4"),
    "negative_stride": ("PyTorch", "offset >= 0"),
    "offset_past_storage": ("PyTorch", "reaches element 10 of a storage of 4"),
    "stride_2_40": ("PyTorch", "outside the file's data"),
    "shape_past_int64": ("PyTorch", "needs"),
    "stride0_bomb": ("PyTorch", "needs 1.2 GB"),
    "storage_viewed_400_times": ("PyTorch", "allowed for a file of"),
    "pth_nested_200000": ("PyTorch", "nested more than 64 deep"),
    "pth_memo_1e8": ("PyTorch", "memo index 100000000"),
    "pth_memo_never_stored": ("PyTorch", "never stored"),
    "pth_storage_missing": ("PyTorch", "has no member"),
    "pth_storage_size_lies": ("PyTorch", "its member holds 16 bytes"),
    "pth_truncated": ("PyTorch", "not a well-formed pickle"),
    "pth_extension_code": ("PyTorch", "extension-registry"),
    "pth_storage_inflates": ("PyTorch", "inflates"),
    "pdparams_nested_200000": ("Paddle", "nested more than 64 deep"),
    "pdparams_memo_1e8": ("Paddle", "memo index 100000000"),
    "pdparams_15000x15000": ("Paddle", "an ndarray without data"),
    "pdparams_shape_without_bytes": ("Paddle", "needs 1800000000 bytes, the file gives 8"),
    "pdparams_object_dtype_string": ("Paddle", "dtype is 'O', not a numpy dtype"),
    "pdparams_object_dtype": ("Paddle", "only bool, integer and float"),
    "pdparams_no_buffer": ("Paddle", "an ndarray without data"),
    "pdparams_list_as_data": ("Paddle", "no buffer of its own"),
    "pdparams_frombuffer_lies": ("Paddle", "needs 4000000 bytes, the file gives 8"),
    "params_shape_past_int64": ("MXNet", "declares the shape (8589934592, 8589934592, 4)"),
    "params_huge_shape": ("MXNet", "declares the shape (15000, 15000)"),
    "params_name_twice": ("MXNet", "the name 'w' is given to 2 arrays"),
    "npz_inflates": ("numpy .npz", "inflates"),
    "npz_declares_1_6_gb": ("numpy .npz", "inflates"),
    "npz_shape_without_bytes": ("numpy .npz", "needs 1800000000 bytes"),
    "npz_string_dtype": ("numpy .npz", "dtype <U4"),
    "npz_object_array": ("numpy .npz", "pickled Python objects"),
    "npz_huge_header": ("numpy .npz", "header of 2147483648 bytes"),
    "safetensors_past_the_file": (".safetensors", "damaged"),
    "safetensors_header_length": (".safetensors", "damaged"),
    "safetensors_bf16": (".safetensors", "BF16, which numpy cannot hold"),
}

# VmHWM, the peak resident memory of this process's own memory map (Linux): getrusage's
# ru_maxrss would also count the pytest worker this process was forked from before its exec
CHILD = r"""
import sys
from d2lkaggle.cli import main
try:
    rc = main(sys.argv[2:])
finally:
    with open("/proc/self/status") as status:
        peak_kb = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(sys.argv[1], "w") as f:
        f.write(peak_kb)
sys.exit(rc)
"""


def run_measured(tmp_path, *argv: str, env: dict | None = None):
    """The CLI in its own process: (completed process, its peak RSS in MB or None)."""
    rss = tmp_path / "rss.txt"
    r = run_py(CHILD, str(rss), *argv, env=env, timeout=300)
    return r, (int(rss.read_text()) / 1024 if rss.exists() else None)


def assert_refused(r, rss_mb, src: str, fmt: str, why: str, out) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])   # < 0 would be a signal
    assert len(lines) == 1, r.stderr[-2000:]
    line = lines[0]
    assert line.startswith(f"d2lkaggle: error: {src}: refused as ") and fmt in line, line
    assert why in line, line
    assert "internal error" not in line and "smaller images or batches" not in line, line
    assert not os.path.exists(out), "an output file was written"
    assert rss_mb is not None and rss_mb < RSS_LIMIT_MB, f"peak RSS {rss_mb} MB"


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_file_is_one_line_exit_2_no_output_small_memory(name, tmp_path):
    src = _craft(name, str(tmp_path))
    out = tmp_path / "out.safetensors"
    r, rss = run_measured(tmp_path, "weights", "convert", src, str(out))
    assert_refused(r, rss, src, *HOSTILE[name], out)


def test_small_crafted_files_are_small():
    """The issue's sizes: the bombs are a few hundred bytes to a few MB."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        for name in ("stride0_bomb", "pth_memo_1e8", "pdparams_15000x15000", "params_huge_shape"):
            assert os.path.getsize(_craft(name, d)) < 2000, name
        assert os.path.getsize(_craft("npz_inflates", d)) < 400_000


def test_run_weights_refuses_a_hostile_file_before_the_run_folder(tmp_path, demo_dir):
    src = _craft("stride_past_storage", str(tmp_path))
    out = tmp_path / "run"
    r, rss = run_measured(tmp_path, "run", "demo", "--data-dir", demo_dir, "--out", str(out),
                          "--weights", src, "--epochs", "1", "--quiet")
    assert_refused(r, rss, src, "PyTorch", "reaches element 12288", out)


def test_the_user_can_raise_the_limit_for_a_file_they_trust(tmp_path):
    # a legitimate expand(): one float viewed 20 M times is 80 MB, over 64 MiB + 8x the file
    src = pth(tmp_path / "expand.pth", dict_of({"w": tensor("0", 1, 0, (20_000_000,), (0,))}),
              {"0": F4[:4]})
    with pytest.raises(UnsafeWeightsError, match="D2LKAGGLE_MAX_WEIGHTS_GB=GB"):
        read_weights(src)
    assert read_weights(src, max_bytes=200_000_000)["w"].shape == (20_000_000,)
    out = tmp_path / "out.npz"
    r, rss = run_measured(tmp_path, "weights", "convert", src, str(out), env={
        "D2LKAGGLE_MAX_WEIGHTS_GB": "0.2"})
    assert r.returncode == 0 and out.exists(), r.stderr
    r, rss = run_measured(tmp_path, "weights", "convert", src, str(tmp_path / "o2.npz"),
                          "--max-weights-gb", "0.2")
    assert r.returncode == 0, r.stderr
    r, _ = run_measured(tmp_path, "weights", "convert", src, str(tmp_path / "o3.npz"), env={
        "D2LKAGGLE_MAX_WEIGHTS_GB": "lots"})
    assert r.returncode == 2 and "D2LKAGGLE_MAX_WEIGHTS_GB='lots'" in r.stderr


def test_views_tied_storages_and_edges_read_right(tmp_path):
    """What the checks let through is read exactly: a transposed view, an offset slice, a
    stride-0 expand, two tensors on one storage (read once), an empty and a 0-d tensor."""
    data = np.arange(12, dtype=np.float32)
    src = pth(tmp_path / "ok.pth", dict_of({
        "t": tensor("0", 12, 0, (4, 3), (1, 4)), "slice": tensor("0", 12, 5, (3,), (2,)),
        "expand": tensor("1", 1, 0, (2, 3), (0, 0)), "empty": tensor("2", 0, 0, (0, 5), (5, 1)),
        "scalar": tensor("1", 1, 0, (), ()), "last": tensor("0", 12, 11, (1,), (1,))}),
        {"0": data.tobytes(), "1": np.float32([7]).tobytes(), "2": b""})
    got = read_torch_zip(src)
    np.testing.assert_array_equal(got["t"], data.reshape(3, 4).T)
    np.testing.assert_array_equal(got["slice"], [5, 7, 9])
    np.testing.assert_array_equal(got["expand"], np.full((2, 3), 7, np.float32))
    assert got["empty"].shape == (0, 5) and got["scalar"].shape == () and got["scalar"] == 7
    assert got["last"].tolist() == [11.0]
    # the same array read from a pickle of numpy's own (protocols 2, 4, 5) and an .npz
    arrays = {"w": np.arange(6, dtype=">f4").reshape(2, 3), "f": np.asfortranarray(np.eye(3)),
              "b": np.array([True, False]), "s": np.float32(2.5), "z": np.zeros((0, 3), np.int8)}
    for proto in (2, 4, 5):
        with open(tmp_path / f"p{proto}.pdparams", "wb") as f:
            pickle.dump(arrays, f, protocol=proto)
        got = read_weights(str(tmp_path / f"p{proto}.pdparams"))
        for k, v in arrays.items():
            np.testing.assert_array_equal(got[k], np.asarray(v, np.float32).T
                                          if np.ndim(v) == 2 and k.endswith("weight") else v)
    np.savez_compressed(tmp_path / "c.npz", **{k: np.asarray(v) for k, v in arrays.items()})
    got = read_weights(str(tmp_path / "c.npz"))
    assert all(np.array_equal(got[k], np.asarray(v, np.float32)) for k, v in arrays.items())


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_weights_convert_honours_the_umask_and_never_touches_the_output_on_refusal(
        tmp_path, suffix, capsys):
    from d2lkaggle.cli import main
    src = npz(tmp_path / "w.npz", {"w.npy": npy({"descr": "<f4", "fortran_order": False,
                                                 "shape": (4,)}, F4)})
    dst = tmp_path / ("out" + suffix)
    old = os.umask(0o022)
    try:
        assert main(["weights", "convert", src, str(dst)]) == 0
        assert oct(os.stat(dst).st_mode & 0o777) == oct(0o644)   # not mkstemp's 0600
        os.umask(0o027)
        assert main(["weights", "convert", src, str(dst)]) == 0
        assert oct(os.stat(dst).st_mode & 0o777) == oct(0o640)
    finally:
        os.umask(old)
    before = dst.read_bytes()
    bad = _craft("stride_past_storage", str(tmp_path))
    assert main(["weights", "convert", bad, str(dst)]) == 2
    assert "refused as" in capsys.readouterr().err
    assert dst.read_bytes() == before   # the earlier output is kept whole
    assert sorted(os.listdir(tmp_path)) == sorted(["w.npz", "out" + suffix,
                                                   "stride_past_storage.pth"])   # no temporaries
