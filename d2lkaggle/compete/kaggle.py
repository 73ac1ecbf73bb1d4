"""Real Kaggle data in and out: download a competition, unpack it, submit a run.

Step 1 of both chapters ("download the dataset from the competition's Data tab") and their
last step (upload ``submission.csv``), through the official ``kaggle`` client
(``pip install "d2lkaggle[kaggle]"``). Everything that talks to Kaggle goes through the
one object :func:`kaggle_api` returns, so tests replace exactly that.

* :func:`download_competition` — ``competition_download_files`` then every archive unpacked
  with the library's safe extractor (:func:`d2lkaggle.extract`): the outer zip, then
  CIFAR-10's ``train.7z``/``test.7z`` inside it.
* :func:`find_archives` / :func:`extract_archives` — archives in a data folder that were
  never unpacked (``run`` points at them instead of saying "image folder not found").
* :func:`submit` — checks the submission against the competition's sample file before
  anything is uploaded.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

from ..data.hub import ARCHIVE_SUFFIXES, default_data_dir, extract
from ..specs.competitions import Competition, get_competition

INSTALL_HINT = 'pip install "d2lkaggle[kaggle]"  (or: pip install kaggle)'


class KaggleSetupError(RuntimeError):
    """The ``kaggle`` package or the Kaggle credentials are missing."""


def kaggle_slug(competition: str | Competition) -> str:
    """The competition's name on kaggle.com (``cifar10`` → ``cifar-10``)."""
    comp = get_competition(competition) if isinstance(competition, str) else competition
    if not comp.url:
        from ..specs.competitions import COMPETITIONS
        known = ", ".join(c.url.rstrip("/").rsplit("/", 1)[-1] for c in COMPETITIONS.values() if c.url)
        raise ValueError(f"competition {comp.name!r} is not a Kaggle competition; "
                         f"choose one of: {known}")
    return comp.url.rstrip("/").rsplit("/", 1)[-1]


def credentials_source() -> str | None:
    """Where the Kaggle credentials would come from, or None when there are none.

    Checked as the ``kaggle`` client reads them: ``KAGGLE_USERNAME`` + ``KAGGLE_KEY``,
    ``KAGGLE_API_TOKEN``, ``$KAGGLE_CONFIG_DIR/kaggle.json`` or ``~/.kaggle/kaggle.json``,
    ``~/.kaggle/access_token``.
    """
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    folder = os.environ.get("KAGGLE_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".kaggle")
    for name in ("kaggle.json", "access_token", "access_token.txt"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def kaggle_api() -> Any:
    """An authenticated ``kaggle`` API client (the one place where it is created).

    Raises :class:`KaggleSetupError` with what to do when the package or the credentials
    are missing (the client itself would print a page of help and exit the process).
    """
    import importlib.util
    if importlib.util.find_spec("kaggle") is None:
        raise KaggleSetupError(f"the 'kaggle' package is not installed; install it with: {INSTALL_HINT}")
    if credentials_source() is None:
        home = os.path.join(os.path.expanduser("~"), ".kaggle", "kaggle.json")
        raise KaggleSetupError(
            "no Kaggle credentials: create an API token on kaggle.com (Settings → API → "
            f"Create New Token) and save it as {home} (chmod 600), or set KAGGLE_USERNAME and "
            "KAGGLE_KEY")
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
        api = KaggleApi()
        api.authenticate()
    except SystemExit as e:  # the client exits the process when it cannot authenticate
        raise KaggleSetupError(f"the Kaggle client could not authenticate with the credentials "
                               f"from {credentials_source()} (exit {e.code})") from None
    return api


def _is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _stem(name: str) -> str:
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_archives(data_dir: str) -> list[str]:
    """Archives directly in ``data_dir`` that were never unpacked there, sorted.

    An archive counts as unpacked when the extractor's marker file is there or a folder
    with its stem exists (``train.7z`` → ``train/``, e.g. unpacked by hand with 7z).
    """
    if not os.path.isdir(data_dir):
        return []
    found = []
    for name in sorted(os.listdir(data_dir)):
        path = os.path.join(data_dir, name)
        if not (os.path.isfile(path) and _is_archive(name)) or name.endswith(".part"):
            continue
        marker = os.path.join(data_dir, f".{name}.extracted")
        if os.path.exists(marker) or os.path.isdir(os.path.join(data_dir, _stem(name))):
            continue
        found.append(path)
    return found


def extract_archives(data_dir: str, log: Callable[[str], Any] | None = print) -> list[str]:
    """Unpack every archive :func:`find_archives` lists, then any they contained; return them.

    Each goes through :func:`d2lkaggle.extract` (members escaping the folder are refused,
    nothing half-written is left, each archive is unpacked once).
    """
    done: list[str] = []
    for _ in range(5):  # outer zip → inner 7z/zip; a few levels at most
        todo = [a for a in find_archives(data_dir) if a not in done]
        if not todo:
            break
        for archive in todo:
            if log:
                log(f"extracting {archive}")
            extract(archive, data_dir)
            done.append(archive)
    return done


def archive_hint(comp: Competition, data_dir: str) -> str | None:
    """When ``comp``'s image folders are missing from ``data_dir`` but archives are there,
    the sentence saying how to unpack them (for ``run``'s error), else None."""
    from ..data.cifar import find_cifar_archive
    if find_cifar_archive(data_dir) is not None:
        return None   # a CIFAR python archive is read as it is, never unpacked (d2lkaggle.data.cifar)
    missing = [d for d in (comp.train_dir, comp.test_dir)
               if not os.path.isdir(os.path.join(data_dir, d))]
    archives = find_archives(data_dir)
    if not missing or not archives:
        return None
    names = ", ".join(os.path.basename(a) for a in archives)
    return (f"{'/'.join(m + '/' for m in missing)} not found in {data_dir}, but {names} "
            f"{'is' if len(archives) == 1 else 'are'} not unpacked: run `d2lkaggle extract "
            f"{archives[0]}`{' (and the others)' if len(archives) > 1 else ''} or add --extract")


def download_competition(competition: str, path: str | None = None, *, api: Any = None,
                         unpack: bool = True, force: bool = False,
                         log: Callable[[str], Any] | None = print) -> str:
    """Download a competition's files from Kaggle into ``path`` and unpack them; return ``path``.

    ``path`` defaults to ``$D2LKAGGLE_DATA/<slug>`` (``~/.cache/d2lkaggle/cifar-10``). You
    must have accepted the competition's rules on kaggle.com first.
    """
    slug = kaggle_slug(competition)
    path = os.path.abspath(path or os.path.join(default_data_dir(), slug))
    os.makedirs(path, exist_ok=True)
    api = api if api is not None else kaggle_api()
    if log:
        log(f"downloading the {slug} competition files into {path}")
    try:
        api.competition_download_files(slug, path=path, force=force, quiet=False)
    except Exception as e:
        text = str(e)
        if "403" in text or "Forbidden" in text:
            raise RuntimeError(f"Kaggle refused the download of {slug} (403): accept the "
                               f"competition's rules at https://www.kaggle.com/c/{slug}/rules "
                               "with the account of your credentials, then retry") from e
        raise RuntimeError(f"downloading {slug} from Kaggle failed: {type(e).__name__}: {e}") from e
    if unpack:
        extract_archives(path, log)
    return path


def _load_summary(run_dir: str) -> dict:
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def submit(run_dir: str, message: str, *, competition: str | None = None,
           sample: str | None = None, api: Any = None,
           log: Callable[[str], Any] | None = print) -> str:
    """Upload ``run_dir/submission.csv`` to Kaggle after checking it against the sample file.

    The competition and the data folder (for ``sampleSubmission.csv`` /
    ``sample_submission.csv``) come from the run's ``summary.json`` unless given. Nothing is
    uploaded when the check fails. Returns the path of the uploaded file.
    """
    from .submission import validate_submission
    if not message or not message.strip():
        raise ValueError("a submission needs a message: -m 'what changed'")
    sub = run_dir if os.path.isfile(run_dir) else os.path.join(run_dir, "submission.csv")
    if not os.path.isfile(sub):
        raise FileNotFoundError(f"no submission.csv in {run_dir}: run `d2lkaggle run ...` first")
    summary = _load_summary(os.path.dirname(sub))
    name = competition or summary.get("competition")
    if not name:
        raise ValueError(f"{os.path.dirname(sub)} has no summary.json naming the competition; "
                         "pass --competition cifar10|dog-breed")
    comp = get_competition(name)
    slug = kaggle_slug(comp)
    if sample is None and summary.get("data_dir"):
        sample = os.path.join(summary["data_dir"], comp.sample_file)
    if sample is None or not os.path.isfile(sample):
        raise FileNotFoundError(f"sample submission not found ({sample or comp.sample_file}); "
                                "pass --sample PATH so the file can be checked before upload")
    validate_submission(sub, sample, kind=comp.submission)
    api = api if api is not None else kaggle_api()
    if log:
        log(f"{sub} matches {sample}; submitting to {slug}")
    api.competition_submit(sub, message, slug)
    return sub
