"""hub: download (against a local HTTP server, never the internet) and safe extraction."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
import tarfile
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import py7zr
import pytest

from d2lkaggle.data import hub
from d2lkaggle.data.hub import CorruptArchiveError, DownloadError, UnsafeArchiveError

PAYLOAD = b"d2lkaggle test payload\n" * 1000


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # requests honours *_proxy variables; a proxy would answer for 127.0.0.1.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over a fresh folder; ``hits`` lists the paths it was asked for."""
    root = tmp_path / "srv"
    root.mkdir()
    hits: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    with serving(ThreadingHTTPServer, Handler) as url:
        yield SimpleNamespace(root=root, url=url, hits=hits)


@contextlib.contextmanager
def serving(server_cls, handler):
    """Run ``server_cls`` with ``handler`` on 127.0.0.1 in a thread; yield its base URL."""
    httpd = server_cls(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "cache")


def left_behind(folder) -> list[str]:
    """What a download left in ``folder`` besides its lock files."""
    return sorted(p for p in os.listdir(folder) if not p.endswith(".lock"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- hub basics

def test_data_hub_has_the_textbook_entries():
    assert hub.DATA_URL == "http://d2l-data.s3-accelerate.amazonaws.com/"
    assert hub.DATA_HUB["cifar10_tiny"] == (
        "http://d2l-data.s3-accelerate.amazonaws.com/kaggle_cifar10_tiny.zip",
        "2068874e4b9a9f0fb07ebe0ad2b29754449ccacd")
    assert hub.DATA_HUB["dog_tiny"] == (
        "http://d2l-data.s3-accelerate.amazonaws.com/kaggle_dog_tiny.zip",
        "0cb91d09b814ecdc07b50f31f8dcad3e81d6a86d")


def test_default_data_dir_env_and_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("D2LKAGGLE_DATA", str(tmp_path / "mydata"))
    assert hub.default_data_dir() == str(tmp_path / "mydata")
    monkeypatch.delenv("D2LKAGGLE_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.default_data_dir() == str(tmp_path / "home" / ".cache" / "d2lkaggle")


def test_sha1_matches_hashlib(tmp_path):
    p = tmp_path / "f.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # spans several chunks
    p.write_bytes(data)
    assert hub.sha1(str(p)) == digest(data)


# --------------------------------------------------------------------------- download

def test_download_then_cache_hit(server, cache):
    (server.root / "f.bin").write_bytes(PAYLOAD)
    path = hub.download(server.url + "f.bin", cache, digest(PAYLOAD))
    assert path == os.path.join(os.path.abspath(cache), "f.bin")
    with open(path, "rb") as f:
        assert f.read() == PAYLOAD
    assert not os.path.exists(path + ".part")
    assert server.hits == ["/f.bin"]
    assert hub.download(server.url + "f.bin", cache, digest(PAYLOAD)) == path
    assert server.hits == ["/f.bin"]  # the second call made no request


def test_download_by_hub_name_into_env_dir(server, monkeypatch, tmp_path):
    (server.root / "data.zip").write_bytes(PAYLOAD)
    monkeypatch.setitem(hub.DATA_HUB, "local", (server.url + "data.zip", digest(PAYLOAD)))
    monkeypatch.setenv("D2LKAGGLE_DATA", str(tmp_path / "envdata"))
    path = hub.download("local")
    assert path == str(tmp_path / "envdata" / "data.zip")
    with open(path, "rb") as f:
        assert f.read() == PAYLOAD


def test_existing_file_without_hash_is_reused(server, cache):
    os.makedirs(cache)
    with open(os.path.join(cache, "f.bin"), "wb") as f:
        f.write(b"local copy")
    path = hub.download(server.url + "f.bin", cache)
    with open(path, "rb") as f:
        assert f.read() == b"local copy"
    assert server.hits == []


def test_wrong_sha1_raises_and_leaves_nothing(server, cache):
    (server.root / "f.bin").write_bytes(PAYLOAD)
    wrong = "0" * 40
    with pytest.raises(DownloadError) as err:
        hub.download(server.url + "f.bin", cache, wrong)
    assert wrong in str(err.value) and digest(PAYLOAD) in str(err.value)
    assert left_behind(cache) == []  # neither f.bin nor f.bin.part


def test_http_404_raises(server, cache):
    with pytest.raises(DownloadError) as err:
        hub.download(server.url + "missing.zip", cache, "0" * 40)
    assert "404" in str(err.value) and server.url + "missing.zip" in str(err.value)
    assert left_behind(cache) == []


def test_connection_refused_says_how_to_work_offline(cache):
    url = f"http://127.0.0.1:{free_port()}/kaggle_x.zip"
    with pytest.raises(DownloadError) as err:
        hub.download(url, cache, "0" * 40)
    final = os.path.join(os.path.abspath(cache), "kaggle_x.zip")
    assert f"place kaggle_x.zip at {final} to use it offline" in str(err.value)
    assert left_behind(cache) == []


def test_corrupted_cached_file_is_moved_aside_and_downloaded_again(server, cache, capsys):
    (server.root / "f.bin").write_bytes(PAYLOAD)
    os.makedirs(cache)
    with open(os.path.join(cache, "f.bin"), "wb") as f:
        f.write(PAYLOAD[:-10])  # e.g. an interrupted copy
    path = hub.download(server.url + "f.bin", cache, digest(PAYLOAD))
    with open(path, "rb") as f:
        assert f.read() == PAYLOAD
    assert server.hits == ["/f.bin"]
    # the bad copy is kept beside it, and one line said so with both hashes
    aside = os.path.join(os.path.abspath(cache), "f.sha1-mismatch.bin")
    assert open(aside, "rb").read() == PAYLOAD[:-10]
    line = [ln for ln in capsys.readouterr().err.splitlines() if "does not match" in ln]
    assert len(line) == 1 and digest(PAYLOAD) in line[0] and digest(PAYLOAD[:-10]) in line[0]
    assert f"moved to {aside}" in line[0]


def test_corrupted_cached_file_is_kept_aside_when_refetch_fails(cache):
    os.makedirs(cache)
    with open(os.path.join(cache, "f.bin"), "wb") as f:
        f.write(b"garbage")
    with pytest.raises(DownloadError) as err:
        hub.download(f"http://127.0.0.1:{free_port()}/f.bin", cache, digest(PAYLOAD))
    assert left_behind(cache) == ["f.sha1-mismatch.bin"]   # nothing at f.bin, nothing deleted
    assert "the earlier file is kept as" in str(err.value)


# --------------------------------------------------------------------------- issue 28: local data

def tiny_zip(path, top="kaggle_cifar10_tiny", labels="trainLabels.csv") -> str:
    """An archive in the tiny CIFAR-10 archive's layout (a re-packed copy: not the hub's hash)."""
    return build(path, {f"{top}/{labels}": b"id,label\n1,cat\n", f"{top}/train/1.png": b"png",
                        f"{top}/test/1.png": b"png"})


def test_a_placed_archive_with_another_hash_survives_offline(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    placed = tiny_zip(cache / "kaggle_cifar10_tiny.zip")
    data = open(placed, "rb").read()
    # the hub's URL, offline: a dead port instead of the d2l mirror
    monkeypatch.setitem(hub.DATA_HUB, "cifar10_tiny",
                        (f"http://127.0.0.1:{free_port()}/kaggle_cifar10_tiny.zip",
                         hub.DATA_HUB["cifar10_tiny"][1]))
    with pytest.raises(DownloadError) as err:
        hub.download_extract("cifar10_tiny", str(cache))
    aside = cache / "kaggle_cifar10_tiny.sha1-mismatch.zip"
    assert aside.read_bytes() == data   # moved aside, never deleted
    line = [ln for ln in capsys.readouterr().err.splitlines() if "does not match" in ln]
    assert len(line) == 1
    assert hub.DATA_HUB["cifar10_tiny"][1] in line[0] and digest(data) in line[0]
    # the offline error says how to use one's own copy, and where the placed file went
    msg = str(err.value)
    assert "D2LKAGGLE_LOCAL_CIFAR10_TINY=PATH" in msg
    assert "download_extract('cifar10_tiny', local=PATH)" in msg and str(aside) in msg
    # ... and that advice works as written: the moved file, by keyword and by variable
    out = hub.download_extract("cifar10_tiny", str(cache), local=str(aside))
    assert sorted(os.listdir(out)) == ["test", "train", "trainLabels.csv"]
    note = capsys.readouterr().err
    assert f"SHA1 {digest(data)}" in note and "not enforced" in note
    monkeypatch.setenv("D2LKAGGLE_LOCAL_CIFAR10_TINY", str(aside))
    assert hub.download_extract("cifar10_tiny", str(cache)) == out


def test_the_chapters_name_resolves_to_a_local_folder_offline(tmp_path, monkeypatch, capsys):
    # the chapter's own line, unchanged: d2l.download_extract('cifar10_tiny')
    from d2lkaggle.data.demo import make_demo
    data = make_demo(str(tmp_path / "mine" / "cifar"), n_train=10, n_test=2, size=8)
    monkeypatch.setenv("D2LKAGGLE_DATA", str(tmp_path / "cache"))
    monkeypatch.setitem(hub.DATA_HUB, "cifar10_tiny",
                        (f"http://127.0.0.1:{free_port()}/kaggle_cifar10_tiny.zip",
                         hub.DATA_HUB["cifar10_tiny"][1]))
    monkeypatch.setenv(hub.local_env_var("cifar10_tiny"), data)
    assert hub.local_env_var("cifar10_tiny") == "D2LKAGGLE_LOCAL_CIFAR10_TINY"
    assert hub.download_extract("cifar10_tiny") == data
    assert "from D2LKAGGLE_LOCAL_CIFAR10_TINY" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()   # nothing downloaded, nothing copied
    # the folder holding the data (e.g. where an archive was unpacked) works too
    assert hub.download_extract("cifar10_tiny", local=str(tmp_path / "mine")) == data


def test_local_data_is_checked_for_its_layout(tmp_path):
    wrong = tiny_zip(tmp_path / "dogs.zip", top="dogs")   # CIFAR's labels file, not labels.csv
    with pytest.raises(ValueError) as err:
        hub.download_extract("dog_tiny", str(tmp_path / "cache"), local=wrong)
    assert "labels.csv" in str(err.value) and "does not hold dog_tiny" in str(err.value)
    with pytest.raises(FileNotFoundError, match="given as local=.*does not exist"):
        hub.download_extract("dog_tiny", local=str(tmp_path / "missing"))


def test_unknown_name_is_a_value_error(cache):
    with pytest.raises(ValueError, match="not_a_dataset"):
        hub.download("not_a_dataset", cache)


# --------------------------------------------------------------------------- archives

FILES = {"top/a.txt": b"alpha\n", "top/sub/b.bin": bytes(range(256)) * 4}


def build(path, files=FILES):
    """Write ``files`` (archive name -> bytes) as an archive whose type follows the suffix."""
    path = str(path)
    if path.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    elif path.endswith(".7z"):
        with py7zr.SevenZipFile(path, "w") as sz:
            for name, data in files.items():
                sz.writestr(data, name)
    else:
        with tarfile.open(path, "w:" + tar_compression(path)) as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def tar_compression(path: str) -> str:
    for suffixes, mode in (((".tar.gz", ".tgz"), "gz"), ((".tar.bz2", ".tbz2"), "bz2"),
                           ((".tar.xz", ".txz"), "xz")):
        if path.endswith(suffixes):
            return mode
    return ""


def tree(folder) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            if n.endswith(".lock"):  # the extraction's lock file
                continue
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, folder).replace(os.sep, "/")] = open(p, "rb").read()
    return out


def tar_with(path, *infos: tarfile.TarInfo) -> str:
    with tarfile.open(path, "w") as tf:
        for info in infos:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return str(path)


def tar_info(name, type_=tarfile.REGTYPE, linkname="", size=0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = type_, linkname, size
    return info


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2",
                                    ".tar.xz", ".txz", ".7z"])
def test_extract_every_format(tmp_path, suffix):
    archive = build(tmp_path / f"data{suffix}")
    dest = tmp_path / "out"
    assert hub.extract(archive, str(dest)) == str(dest)
    extracted = tree(dest)
    assert extracted.pop(".data" + suffix + ".extracted")  # the marker
    assert extracted == FILES


def test_extract_defaults_to_the_archive_folder(tmp_path):
    archive = build(tmp_path / "data.zip")
    assert hub.extract(archive) == str(tmp_path)
    assert (tmp_path / "top" / "a.txt").read_bytes() == b"alpha\n"


def test_extract_runs_once_and_again_when_the_archive_changes(tmp_path):
    archive = build(tmp_path / "data.tar.gz")
    dest = tmp_path / "out"
    hub.extract(archive, str(dest))
    (dest / "top" / "a.txt").unlink()
    hub.extract(archive, str(dest))
    assert not (dest / "top" / "a.txt").exists()  # marker matched: nothing rewritten

    build(archive, {"top/a.txt": b"new\n"})
    hub.extract(archive, str(dest))
    assert (dest / "top" / "a.txt").read_bytes() == b"new\n"
    assert [p for p in os.listdir(dest) if p.endswith(".tmp")] == []


def test_unsupported_archive_type(tmp_path):
    p = tmp_path / "data.rar"
    p.write_bytes(b"Rar!")
    with pytest.raises(ValueError, match="unsupported archive type"):
        hub.extract(str(p))


def zip_with(path, name) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fine.txt", b"ok")
        # ZipInfo keeps the name as given, unlike writestr(str), which strips a leading '/'.
        zf.writestr(zipfile.ZipInfo(name), b"evil")
    return str(path)


@pytest.mark.parametrize("make, member", [
    (lambda d: zip_with(d / "a.zip", "../evil.txt"), "../evil.txt"),
    (lambda d: zip_with(d / "a.zip", "/tmp/evil_abs.txt"), "/tmp/evil_abs.txt"),
    (lambda d: tar_with(d / "a.tar", tar_info("fine.txt", size=2),
                        tar_info("link", tarfile.SYMTYPE, "../outside")), "link"),
    (lambda d: tar_with(d / "a.tar", tar_info("abs", tarfile.SYMTYPE, "/etc")), "abs"),
    # each link looks harmless on its own; together 'e' points at dest/..
    (lambda d: tar_with(d / "a.tar", tar_info("d", tarfile.SYMTYPE, "."),
                        tar_info("e", tarfile.SYMTYPE, "d/..")), "e"),
    (lambda d: tar_with(d / "a.tar", tar_info("hard", tarfile.LNKTYPE, "../../etc/passwd")),
     "hard"),
    (lambda d: tar_with(d / "a.tar", tar_info("dev", tarfile.CHRTYPE)), "dev"),
    (lambda d: tar_with(d / "a.tar", tar_info("../evil.txt", size=4)), "../evil.txt"),
])
def test_unsafe_archives_are_refused_before_writing(tmp_path, make, member):
    src = tmp_path / "src"
    src.mkdir()
    archive = make(src)
    dest = tmp_path / "box" / "out"
    with pytest.raises(UnsafeArchiveError) as err:
        hub.extract(archive, str(dest))
    assert repr(member) in str(err.value) and archive in str(err.value)
    assert not (tmp_path / "box").exists()
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_safe_links_inside_dest_are_kept(tmp_path):
    archive = tar_with(tmp_path / "a.tar", tar_info("top/real.txt", size=3),
                       tar_info("top/alias", tarfile.SYMTYPE, "real.txt"),
                       tar_info("top/hard", tarfile.LNKTYPE, "top/real.txt"))
    dest = tmp_path / "out"
    hub.extract(archive, str(dest))
    assert os.readlink(dest / "top" / "alias") == "real.txt"
    assert (dest / "top" / "hard").read_bytes() == b"xxx"


def test_7z_symlink_escaping_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "outside").mkdir()  # py7zr only archives links whose target exists
    (src / "link").symlink_to("../outside")
    archive = str(tmp_path / "a.7z")
    with py7zr.SevenZipFile(archive, "w") as sz:
        sz.write(src / "link", "link")
    with pytest.raises(UnsafeArchiveError, match="'link'"):
        hub.extract(archive, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz", ".7z"])
def test_truncated_archive_is_a_clear_error_and_retried_later(tmp_path, suffix):
    big = {"top/a.txt": b"alpha\n", "top/big.bin": os.urandom(200_000)}
    good = open(build(tmp_path / f"good{suffix}", big), "rb").read()
    archive = tmp_path / f"data{suffix}"
    archive.write_bytes(good[:len(good) // 2])
    dest = tmp_path / "out"
    with pytest.raises(CorruptArchiveError) as err:
        hub.extract(str(archive), str(dest))
    assert str(archive) in str(err.value)
    assert not dest.exists() or left_behind(dest) == []  # no marker, no temp folder

    archive.write_bytes(good)
    hub.extract(str(archive), str(dest))
    assert (dest / "top" / "big.bin").read_bytes() == big["top/big.bin"]


# --------------------------------------------------------------------------- download_extract

def test_download_extract_returns_the_top_folder(server, cache, monkeypatch):
    files = {"kaggle_x_tiny/trainLabels.csv": b"id,label\n1,cat\n",
             "kaggle_x_tiny/train/1.png": b"png"}
    archive = build(server.root / "kaggle_x_tiny.zip", files)
    url = server.url + "kaggle_x_tiny.zip"
    expected = os.path.join(os.path.abspath(cache), "kaggle_x_tiny")
    monkeypatch.setitem(hub.DATA_HUB, "x_tiny", (url, hub.sha1(archive)))
    assert hub.download_extract("x_tiny", cache) == expected
    with open(os.path.join(expected, "trainLabels.csv"), "rb") as f:
        assert f.read() == files["kaggle_x_tiny/trainLabels.csv"]
    assert hub.download_extract("x_tiny", cache) == expected
    assert server.hits == ["/kaggle_x_tiny.zip"]


def test_download_extract_without_top_folder_returns_the_extraction_folder(server, cache):
    build(server.root / "flat.tar.gz", {"a.txt": b"a", "b/c.txt": b"c"})
    out = hub.download_extract(server.url + "flat.tar.gz", cache)
    assert out == os.path.abspath(cache)
    assert open(os.path.join(out, "b", "c.txt"), "rb").read() == b"c"


# --------------------------------------------------------------------------- issue 12: downloads

import gzip  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from http.server import BaseHTTPRequestHandler  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def tricky(tmp_path):
    """A local server whose files can trickle (``?rate=B/s``), stall (``?stall=s``) or come
    with ``Content-Encoding: gzip`` (``?gzip=1``, the file's own bytes as the body)."""
    root = tmp_path / "tricky"
    root.mkdir()
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            u = urlsplit(self.path)
            q = {k: float(v[0]) for k, v in parse_qs(u.query).items()}
            hits.append(u.path)
            f = root / u.path.lstrip("/")
            if not f.is_file():
                self.send_error(404)
                return
            body = f.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            if q.get("gzip"):
                self.send_header("Content-Encoding", "gzip")
            self.end_headers()
            try:
                if "stall" in q:
                    self.wfile.write(body[:10])
                    self.wfile.flush()
                    time.sleep(q["stall"])
                    return
                step = int(q.get("rate", 0) / 10) or len(body)
                for i in range(0, len(body), step):
                    self.wfile.write(body[i:i + step])
                    self.wfile.flush()
                    if "rate" in q:
                        time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        block_on_close = False

    with serving(Server, Handler) as url:
        yield SimpleNamespace(root=root, url=url, hits=hits)


def downloader(url, folder, sha) -> subprocess.Popen:
    """``hub.download`` in a separate process (what a second notebook or terminal is)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               NO_PROXY="127.0.0.1,localhost")
    code = ("import sys; from d2lkaggle.data import hub; "
            "print(hub.download(sys.argv[1], sys.argv[2], sys.argv[3]))")
    return subprocess.Popen([sys.executable, "-c", code, url, folder, sha], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond, timeout=60.0, what="condition"):
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def parts(folder) -> list[str]:
    return [p for p in os.listdir(folder) if p.endswith(".part")] if os.path.isdir(folder) else []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_concurrent_downloader_never_yields_a_bad_file(tricky, cache, sig):
    data = os.urandom(300_000)
    (tricky.root / "f.bin").write_bytes(data)
    a = downloader(tricky.url + "f.bin?rate=30000", cache, digest(data))  # ~10 s
    wait_for(lambda: any(os.path.getsize(os.path.join(cache, p)) > 0 for p in parts(cache)),
             what="the first download to start writing")
    b = downloader(tricky.url + "f.bin", cache, digest(data))  # fast, but must wait for A
    time.sleep(1.0)
    assert b.poll() is None, b.communicate()  # B waits for A's lock instead of racing it
    a.send_signal(sig)
    a.wait(30)
    out, err = b.communicate(timeout=120)
    assert b.returncode == 0, err
    final = os.path.join(os.path.abspath(cache), "f.bin")
    assert out.strip() == final
    assert hub.sha1(final) == digest(data)
    assert left_behind(cache) == ["f.bin"]  # A's temporary file is gone too


def test_two_concurrent_downloads_fetch_once_and_both_succeed(tricky, cache):
    data = os.urandom(100_000)
    (tricky.root / "f.bin").write_bytes(data)
    a = downloader(tricky.url + "f.bin?rate=50000", cache, digest(data))  # ~2 s
    wait_for(lambda: parts(cache), what="the first download to start")
    b = downloader(tricky.url + "f.bin", cache, digest(data))
    outs = [p.communicate(timeout=120) for p in (a, b)]
    assert (a.returncode, b.returncode) == (0, 0), outs
    final = os.path.join(os.path.abspath(cache), "f.bin")
    assert [o.strip() for o, _ in outs] == [final, final]
    assert tricky.hits == ["/f.bin"]  # the second process found A's verified file
    assert hub.sha1(final) == digest(data) and left_behind(cache) == ["f.bin"]


def test_stale_part_of_a_dead_download_is_removed(tricky, cache):
    (tricky.root / "f.bin").write_bytes(PAYLOAD)
    os.makedirs(cache)
    for stale in (".f.bin.abc123.part", "f.bin.part"):  # this version's and the old name
        with open(os.path.join(cache, stale), "wb") as f:
            f.write(b"x" * 1000)
    hub.download(tricky.url + "f.bin", cache, digest(PAYLOAD))
    assert left_behind(cache) == ["f.bin"]


def test_content_encoding_gzip_keeps_the_raw_bytes(tricky, cache):
    raw = gzip.compress(PAYLOAD)  # a .tar.gz that a server labels Content-Encoding: gzip
    (tricky.root / "d.tar.gz").write_bytes(raw)
    path = hub.download(tricky.url + "d.tar.gz?gzip=1", cache, digest(raw))
    assert open(path, "rb").read() == raw
    # and without a hash the saved file is still the archive, not its decompressed body
    os.remove(path)
    path = hub.download(tricky.url + "d.tar.gz?gzip=1", cache)
    assert open(path, "rb").read() == raw


@pytest.mark.parametrize("algo", ["md5", "sha256"])
def test_data_hub_hash_may_be_md5_or_sha256(server, cache, monkeypatch, algo):
    (server.root / "f.bin").write_bytes(PAYLOAD)
    good = f"{algo}:" + hashlib.new(algo, PAYLOAD).hexdigest()
    monkeypatch.setitem(hub.DATA_HUB, "h", (server.url + "f.bin", good))
    assert open(hub.download("h", cache), "rb").read() == PAYLOAD
    bad = f"{algo}:" + "0" * len(hashlib.new(algo, b"").hexdigest())
    monkeypatch.setitem(hub.DATA_HUB, "h", (server.url + "f.bin", bad))
    os.remove(os.path.join(cache, "f.bin"))
    with pytest.raises(DownloadError, match=f"{algo.upper()} mismatch"):
        hub.download("h", cache)
    with pytest.raises(ValueError, match="bad hash"):
        hub.download(server.url + "f.bin", cache, "crc32:1234")


def test_trickle_download_hits_the_deadline(tricky, cache):
    (tricky.root / "f.bin").write_bytes(os.urandom(100_000))
    t = time.monotonic()
    with pytest.raises(DownloadError, match="deadline of 1 s"):
        hub.download(tricky.url + "f.bin?rate=1000", cache, deadline=1)  # would take 100 s
    assert time.monotonic() - t < 10
    assert left_behind(cache) == []


def test_stalled_download_hits_the_stall_timeout(tricky, cache):
    (tricky.root / "f.bin").write_bytes(PAYLOAD)
    t = time.monotonic()
    with pytest.raises(DownloadError, match="stall timeout"):
        hub.download(tricky.url + "f.bin?stall=5", cache, stall_timeout=0.5)
    assert time.monotonic() - t < 4
    assert left_behind(cache) == []


def test_downloaded_file_honours_the_umask(server, cache):
    (server.root / "f.bin").write_bytes(PAYLOAD)
    old = os.umask(0o022)
    try:
        path = hub.download(server.url + "f.bin", cache, digest(PAYLOAD))
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------- issue 12: extraction

def test_extract_never_deletes_a_users_folder(tmp_path):
    dest = tmp_path / "data"
    (dest / "train").mkdir(parents=True)
    (dest / "train" / "mine.png").write_bytes(b"user image")
    archive = build(tmp_path / "a.zip", {"train": b"a file named train", "other.txt": b"o"})
    with pytest.raises(FileExistsError) as err:
        hub.extract(archive, str(dest))
    assert str(dest / "train") in str(err.value)
    assert (dest / "train" / "mine.png").read_bytes() == b"user image"
    assert not (dest / "other.txt").exists()  # refused before anything was moved in


def test_extract_never_overwrites_a_users_file_or_the_archive(tmp_path):
    dest = tmp_path / "data"
    (dest / "top").mkdir(parents=True)
    (dest / "top" / "a.txt").write_bytes(b"user's notes")
    archive = build(tmp_path / "a.zip")  # holds top/a.txt
    with pytest.raises(FileExistsError, match="a.txt"):
        hub.extract(archive, str(dest))
    assert (dest / "top" / "a.txt").read_bytes() == b"user's notes"
    # a member named like the archive itself, extracted next to it
    archive = build(tmp_path / "b.zip", {"b.zip": b"not the archive", "x.txt": b"x"})
    original = open(archive, "rb").read()
    with pytest.raises(FileExistsError, match="b.zip"):
        hub.extract(archive)
    assert open(archive, "rb").read() == original
    # a folder the user made merges when nothing in it collides
    (dest / "sub").mkdir()
    (dest / "sub" / "keep.txt").write_bytes(b"k")
    hub.extract(build(tmp_path / "c.zip", {"sub/new.txt": b"n"}), str(dest))
    assert (dest / "sub" / "keep.txt").read_bytes() == b"k"
    assert (dest / "sub" / "new.txt").read_bytes() == b"n"


def test_reextraction_replaces_only_its_own_files(tmp_path):
    archive = build(tmp_path / "d.tar", {"top/a.txt": b"v1", "top/old.txt": b"old"})
    dest = tmp_path / "out"
    hub.extract(archive, str(dest))
    (dest / "top" / "user.txt").write_bytes(b"user")
    build(archive, {"top/a.txt": b"v2"})
    hub.extract(archive, str(dest))
    assert (dest / "top" / "a.txt").read_bytes() == b"v2"
    assert not (dest / "top" / "old.txt").exists()  # its own stale file is removed
    assert (dest / "top" / "user.txt").read_bytes() == b"user"


def test_zip_bomb_is_refused_unless_allowed(tmp_path):
    archive = str(tmp_path / "bomb.zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("zeros.bin", "w") as f:
            for _ in range(300):
                f.write(bytes(1 << 20))  # 300 MiB of zeros in a ~300 KB archive
    assert os.path.getsize(archive) < 2_000_000
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="more than the limit"):
        hub.extract(archive, str(dest))
    assert not dest.exists()
    small = build(tmp_path / "s.zip")
    with pytest.raises(UnsafeArchiveError, match="max_size"):
        hub.extract(small, str(dest), max_size=100)
    hub.extract(small, str(dest), max_size=10_000)
    assert (dest / "top" / "a.txt").exists()


def test_stale_temp_folder_of_a_dead_extraction_is_removed(tmp_path):
    archive = build(tmp_path / "d.zip")
    dest = tmp_path / "out"
    dead = dest / ".d.zip.k2j3h4.tmp"  # what a killed extraction leaves behind
    (dead / "top").mkdir(parents=True)
    (dead / "top" / "big.bin").write_bytes(b"x" * 100_000)
    (dest / ".my.tmp").mkdir()  # the user's: not ours to remove
    hub.extract(archive, str(dest))
    assert not dead.exists() and (dest / ".my.tmp").is_dir()


def test_deleted_extracted_folder_is_extracted_again(server, cache, monkeypatch):
    files = {"kaggle_y_tiny/trainLabels.csv": b"id,label\n1,cat\n"}
    archive = build(server.root / "kaggle_y_tiny.zip", files)
    monkeypatch.setitem(hub.DATA_HUB, "y_tiny", (server.url + "kaggle_y_tiny.zip",
                                                  hub.sha1(archive)))
    out = hub.download_extract("y_tiny", cache)
    import shutil
    shutil.rmtree(out)  # the marker file stays behind
    assert hub.download_extract("y_tiny", cache) == out
    assert open(os.path.join(out, "trainLabels.csv"), "rb").read() == files[
        "kaggle_y_tiny/trainLabels.csv"]


def test_second_extraction_waits_for_the_first(tmp_path):
    from filelock import FileLock
    archive = build(tmp_path / "d.tar")
    dest = tmp_path / "out"
    dest.mkdir()
    held = FileLock(str(dest / ".d.tar.lock"))
    held.acquire()  # an extraction of d.tar in progress elsewhere
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-c", "import sys; from d2lkaggle.data import hub; "
                          "print(hub.extract(sys.argv[1], sys.argv[2]))", archive, str(dest)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    assert p.poll() is None, p.communicate()  # it waits instead of racing
    assert not (dest / "top").exists()
    held.release()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and out.strip() == str(dest), err
    assert "waiting for another process" in err
    assert tree(dest).get("top/a.txt") == FILES["top/a.txt"]


# --------------------------------------------------------------------------- file names

@pytest.fixture
def any_path(tmp_path):
    """A local server that answers every path with PAYLOAD and records the raw paths."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *args):
            pass

    with serving(ThreadingHTTPServer, Handler) as url:
        yield SimpleNamespace(url=url, hits=hits)


@pytest.mark.parametrize("path, name", [
    ("f/%2e%2e%2f%2e%2e%2fx.bin", "x.bin"),          # the issue's: two levels above --folder
    ("f/..%5c..%5cx.bin", "x.bin"),                  # Windows separators, encoded
    ("f/%2Fetc%2Fx.bin", "x.bin"),                   # an absolute path, encoded
    ("f/a%20b.zip?x=../y", "a b.zip"),               # the query is not the name
])
def test_a_download_name_never_leaves_its_folder(any_path, tmp_path, capsys, path, name):
    from d2lkaggle.cli import main
    top = tmp_path / "top"
    folder = top / "a" / "b" / "X"
    assert main(["download", any_path.url + path, "--folder", str(folder)]) == 0
    from urllib.parse import unquote
    assert [unquote(h) for h in any_path.hits] == [unquote("/" + path)]   # the URL as given
    assert (folder / name).read_bytes() == PAYLOAD
    # nothing above the folder: not the file, not its lock, not a temporary file
    outside = [os.path.relpath(os.path.join(r, f), top) for r, _, fs in os.walk(top) for f in fs]
    assert sorted(outside) == sorted([os.path.join("a", "b", "X", name),
                                      os.path.join("a", "b", "X", f".{name}.lock")])


@pytest.mark.parametrize("path", ["f/%2e%2e", "f/.", "f/", "f/a%00b.zip", "f/%2e%2e%2f"])
def test_a_url_without_a_file_name_is_one_line_and_writes_nothing(any_path, tmp_path, capsys,
                                                                 path):
    from d2lkaggle.cli import main
    folder = tmp_path / "X"
    assert main(["download", any_path.url + path, "--folder", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot derive a file name from URL" in err
    assert not any_path.hits and os.listdir(tmp_path) == []
