"""``d2lkaggle download | extract | make-demo | reorg | kaggle``: getting and laying out the data."""
from __future__ import annotations

import argparse
import json
import os
import time

from ..compete.kaggle import download_competition, submit
from ..data.archives import extract
from ..data.demo import make_demo
from ..data.hub import download, download_extract
from ..data.labels import read_csv_labels
from ..data.reorg import reorg_test, reorg_train_valid
from .args import add_download_limits


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``download``, ``extract``, ``make-demo``, ``reorg`` and ``kaggle download|submit``."""
    dl = sub.add_parser("download", help="download a DATA_HUB entry or URL (SHA-1 checked)")
    dl.add_argument("name", help="a DATA_HUB name (e.g. cifar10_tiny, dog_tiny) or an http(s) URL")
    dl.add_argument("--folder", help="where to keep the file (default: $D2LKAGGLE_DATA or "
                                     "~/.cache/d2lkaggle)")
    dl.add_argument("--extract", action="store_true",
                    help="also extract the archive beside it (default: download only)")
    dl.add_argument("--local", metavar="PATH",
                    help="use your own copy instead of downloading: an extracted folder or an "
                         "archive (layout checked, hash reported; default: $D2LKAGGLE_LOCAL_"
                         "<NAME> when set, e.g. D2LKAGGLE_LOCAL_CIFAR10_TINY)")
    dl.set_defaults(func=cmd_download)
    add_download_limits(dl)

    m = sub.add_parser("make-demo", help="write a synthetic competition in Kaggle layout")
    m.add_argument("out", help="folder to write (train/, test/, labels and sample submission)")
    m.add_argument("--layout", choices=("cifar10", "dog"), default="cifar10",
                   help="CIFAR-10's PNGs + trainLabels.csv or Dog Breed's JPEGs + labels.csv "
                        "(default: %(default)s)")
    m.add_argument("--n-train", type=int, default=1000, help="labelled images (default: %(default)s)")
    m.add_argument("--n-test", type=int, default=200, help="test images (default: %(default)s)")
    m.add_argument("--size", type=int, default=32, help="image side in pixels (default: %(default)s)")
    m.add_argument("--num-classes", type=int, default=10,
                   help="classes: up to 10 shapes, or up to the competition's 120 breeds with "
                        "--layout dog (the Dog chapter's code expects 120; default: %(default)s)")
    m.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    m.add_argument("--hard", action="store_true",
                   help="the harder demo of docs/recipes.md: random colours, noise, clutter (default: off)")
    m.add_argument("--small-subjects", action="store_true",
                   help="shapes at 10-18%% of the shorter side, anywhere in the image (the harder "
                        "Dog set of docs/kaggle_dog.md; default: 22-36%%, near the centre)")
    m.add_argument("--max-size", type=int,
                   help="--layout dog: image sides drawn in [--size, --max-size] pixels "
                        "(default: 0.8 to 1.6 times --size)")
    m.set_defaults(func=cmd_make_demo)

    g = sub.add_parser("reorg", help="the book's train_valid_test folder layout")
    g.add_argument("data_dir", help="competition folder with train/, test/ and the labels CSV")
    g.add_argument("--labels", help="labels CSV (default: DATA_DIR/trainLabels.csv or labels.csv)")
    g.add_argument("--valid-ratio", type=float, default=0.1,
                   help="fraction of each class moved to valid/ (default: %(default)s)")
    g.add_argument("--mode", choices=("link", "copy", "symlink"), default="link",
                   help="hard links (no extra space), copies or symlinks (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the split (default: %(default)s)")
    g.set_defaults(func=cmd_reorg)

    _add_kaggle_parsers(sub)


def _add_kaggle_parsers(sub) -> None:
    """``d2lkaggle extract`` and ``d2lkaggle kaggle download|submit``."""
    e = sub.add_parser("extract", help="unpack a .zip/.7z/.tar* archive safely (once)")
    e.add_argument("archive", help="e.g. ../data/cifar-10/train.7z")
    e.add_argument("dest", nargs="?", help="destination folder (default: the archive's folder)")
    e.set_defaults(func=cmd_extract)

    k = sub.add_parser("kaggle", help="download a competition from Kaggle or submit a run "
                                      "(needs: pip install \"d2lkaggle[kaggle]\" and an API token)")
    ksub = k.add_subparsers(dest="kaggle_command", required=True)
    kd = ksub.add_parser("download", help="download and unpack a competition's files")
    kd.add_argument("competition", help="cifar-10 or dog-breed-identification (or cifar10, dog-breed)")
    kd.add_argument("--path", help="destination folder (default: $D2LKAGGLE_DATA/<competition>, "
                                   "i.e. ~/.cache/d2lkaggle/<competition>)")
    kd.add_argument("--no-extract", action="store_true", help="keep the archives packed (default: unpack)")
    kd.add_argument("--force", action="store_true", help="download again even if the files exist (default: keep them)")
    kd.set_defaults(func=cmd_kaggle_download)
    ks = ksub.add_parser("submit", help="check RUN_DIR/submission.csv against the sample file, then upload it")
    ks.add_argument("run_dir", help="a run folder (with submission.csv and summary.json) or a CSV file")
    ks.add_argument("-m", "--message", required=True, help="the submission's description on Kaggle")
    ks.add_argument("--competition", help="default: the one in RUN_DIR/summary.json")
    ks.add_argument("--sample", help="sample submission to check against (default: the one in the "
                                     "run's data folder)")
    ks.set_defaults(func=cmd_kaggle_submit)

def cmd_download(a: argparse.Namespace) -> int:
    kw = dict(deadline=a.deadline, stall_timeout=a.stall_timeout)
    max_size = None if a.max_extract_gb is None else int(a.max_extract_gb * 1e9)
    path = (download_extract(a.name, a.folder, max_size=max_size, local=a.local, **kw)
            if a.extract else download(a.name, a.folder, local=a.local, **kw))
    print(path)
    return 0

def cmd_make_demo(a: argparse.Namespace) -> int:
    t = time.perf_counter()
    out = make_demo(a.out, n_train=a.n_train, n_test=a.n_test, size=a.size, seed=a.seed,
                    layout=a.layout, num_classes=a.num_classes, hard=a.hard,
                    small_subjects=a.small_subjects, max_size=a.max_size)
    print(f"wrote a {a.layout} demo competition to {out} in {time.perf_counter() - t:.1f} s")
    return 0

def cmd_reorg(a: argparse.Namespace) -> int:
    labels_file = a.labels or next((os.path.join(a.data_dir, f) for f in ("trainLabels.csv", "labels.csv")
                                    if os.path.exists(os.path.join(a.data_dir, f))), None)
    if labels_file is None:
        raise FileNotFoundError(f"no trainLabels.csv or labels.csv in {a.data_dir}; "
                                f"pass --labels FILE")
    t = time.perf_counter()
    labels = read_csv_labels(labels_file)
    n_valid = reorg_train_valid(a.data_dir, labels, a.valid_ratio, seed=a.seed, mode=a.mode)
    n_test = reorg_test(a.data_dir, mode=a.mode) if os.path.isdir(os.path.join(a.data_dir, "test")) else 0
    dt = time.perf_counter() - t
    classes = len(set(labels.values()))
    print(json.dumps({"train_valid": len(labels), "classes": classes, "valid_per_class": n_valid,
                      "valid": n_valid * classes, "train": len(labels) - n_valid * classes,
                      "test": n_test, "mode": a.mode, "seconds": round(dt, 2)}))
    return 0

def cmd_extract(a: argparse.Namespace) -> int:
    t = time.perf_counter()
    dest = extract(a.archive, a.dest)
    print(f"extracted {a.archive} into {dest} in {time.perf_counter() - t:.1f} s")
    return 0

def cmd_kaggle_download(a: argparse.Namespace) -> int:
    path = download_competition(a.competition, a.path, unpack=not a.no_extract, force=a.force)
    print(path)
    return 0

def cmd_kaggle_submit(a: argparse.Namespace) -> int:
    submit(a.run_dir, a.message, competition=a.competition, sample=a.sample)
    return 0
