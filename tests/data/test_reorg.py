"""split_train_valid and the book's train_valid_test layout."""
from __future__ import annotations

import errno
import os
import random

import pytest

from d2lkaggle.data import reorg
from d2lkaggle.data.reorg import reorg_test, reorg_train_valid
from d2lkaggle.data.splits import n_valid_per_label, split_train_valid


def sized_labels(sizes: dict[str, int]) -> dict[str, str]:
    return {f"{c}{i:03d}": c for c, n in sizes.items() for i in range(n)}


def make_train(data_dir, labels: dict[str, str], order=None, ext=".png") -> None:
    train = data_dir / "train"
    train.mkdir(parents=True, exist_ok=True)
    for i in (order or list(labels)):
        (train / f"{i}{ext}").write_bytes(f"{i}:{labels[i]}".encode())


def tree(root) -> dict[str, bytes]:
    """{relative path: content} of every file under root (following links)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root).replace(os.sep, "/")] = fh.read()
    return out


def split_from_tree(data_dir) -> tuple[set[str], set[str]]:
    t = tree(data_dir / "train_valid_test")
    part = lambda name: {os.path.splitext(p.split("/")[-1])[0]  # noqa: E731
                         for p in t if p.startswith(name + "/")}
    return part("train"), part("valid")


# ----------------------------------------------------------------------------- split

def test_split_rule_numbers():
    labels = sized_labels({"a": 10, "b": 7, "c": 20})
    assert n_valid_per_label(labels, 0.3) == 2  # floor(7 * 0.3) = 2
    train, valid = split_train_valid(labels, 0.3, seed=0)
    assert len(valid) == 6 and len(train) == 31
    assert train == sorted(train) and valid == sorted(valid)
    assert set(train) | set(valid) == set(labels) and not set(train) & set(valid)
    for c in "abc":
        assert sum(labels[i] == c for i in valid) == 2


def test_split_rule_at_least_one():
    labels = sized_labels({"a": 3, "b": 50})
    assert n_valid_per_label(labels, 0.1) == 1  # max(1, floor(0.3))
    assert n_valid_per_label(labels, 0.0) == 1  # the book's rule keeps one even at 0
    assert len(split_train_valid(labels, 0.1)[1]) == 2


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan"), "x"])
def test_split_bad_ratio(ratio):
    with pytest.raises(ValueError, match="valid_ratio"):
        split_train_valid(sized_labels({"a": 5}), ratio)


def test_split_empty_labels():
    with pytest.raises(ValueError, match="no labels"):
        split_train_valid({}, 0.1)


def test_split_deterministic_and_order_independent():
    labels = sized_labels({"cat": 30, "dog": 25, "frog": 40})
    items = list(labels.items())
    random.Random(3).shuffle(items)
    shuffled = dict(items)
    assert list(shuffled) != list(labels)
    assert split_train_valid(labels, 0.2, 7) == split_train_valid(shuffled, 0.2, 7)
    assert split_train_valid(labels, 0.2, 7)[1] != split_train_valid(labels, 0.2, 8)[1]


def test_split_golden_values():
    # Pinned output: the split must not change across machines or numpy versions.
    labels = {f"{c}{i}": c for c in "ab" for i in range(5)}
    assert split_train_valid(labels, 0.4, 0)[1] == ["a2", "a4", "b1", "b4"]
    assert split_train_valid(labels, 0.4, 1)[1] == ["a0", "a4", "b0", "b3"]


# ----------------------------------------------------------------------------- reorg

def test_reorg_layout_and_hidden_files(tmp_path):
    labels = sized_labels({"cat": 10, "dog": 7, "frog": 20})
    make_train(tmp_path, labels)
    (tmp_path / "train" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "train" / "subdir").mkdir()
    n = reorg_train_valid(tmp_path, labels, 0.3, seed=0)
    assert n == 2
    t = tree(tmp_path / "train_valid_test")
    _, valid = split_train_valid(labels, 0.3, seed=0)
    expected = {}
    for i, c in labels.items():
        content = f"{i}:{c}".encode()
        expected[f"train_valid/{c}/{i}.png"] = content
        expected[f"{'valid' if i in valid else 'train'}/{c}/{i}.png"] = content
    assert t == expected
    assert sorted(os.listdir(tmp_path / "train_valid_test")) == ["train", "train_valid", "valid"]


def test_reorg_independent_of_creation_order(tmp_path):
    labels = sized_labels({"a": 12, "b": 9})
    order = list(labels)
    random.Random(0).shuffle(order)
    make_train(tmp_path / "one", labels)
    make_train(tmp_path / "two", labels, order=order)
    reorg_train_valid(tmp_path / "one", labels, 0.25, seed=5)
    reorg_train_valid(tmp_path / "two", dict(reversed(list(labels.items()))), 0.25, seed=5)
    assert tree(tmp_path / "one" / "train_valid_test") == tree(tmp_path / "two" / "train_valid_test")


def test_reorg_image_without_label_and_label_without_image(tmp_path):
    labels = sized_labels({"a": 5, "b": 5})
    make_train(tmp_path, labels)
    extra = dict(labels, **{f"x{i:02d}": "a" for i in range(12)})
    with pytest.raises(ValueError) as e:
        reorg_train_valid(tmp_path, extra, 0.2)
    msg = str(e.value)
    assert "12 labelled ids have no image" in msg and "'x00'" in msg and "(2 more)" in msg
    fewer = dict(list(labels.items())[1:])
    with pytest.raises(ValueError, match=r"1 images in .* have no label: 'a000'"):
        reorg_train_valid(tmp_path, fewer, 0.2)
    assert not (tmp_path / "train_valid_test" / "train").exists()


def test_reorg_rerun_different_seed_leaves_no_stale_files(tmp_path):
    labels = sized_labels({"a": 20, "b": 20, "c": 20})
    make_train(tmp_path, labels)
    reorg_train_valid(tmp_path, labels, 0.25, seed=0)
    first = tree(tmp_path / "train_valid_test")
    reorg_train_valid(tmp_path, labels, 0.25, seed=0)
    assert tree(tmp_path / "train_valid_test") == first  # same seed: identical tree
    reorg_train_valid(tmp_path, labels, 0.25, seed=1)
    train, valid = split_from_tree(tmp_path)
    new_train, new_valid = split_train_valid(labels, 0.25, seed=1)
    old_valid = set(split_train_valid(labels, 0.25, seed=0)[1])
    assert old_valid != set(new_valid)
    assert valid == set(new_valid) and train == set(new_train)  # exactly the new split
    assert [p for p in os.listdir(tmp_path / "train_valid_test") if p.startswith(".")] == []


def test_reorg_fewer_images_on_rerun_removes_them(tmp_path):
    labels = sized_labels({"a": 6, "b": 6})
    make_train(tmp_path, labels)
    reorg_train_valid(tmp_path, labels, 0.2)
    os.remove(tmp_path / "train" / "a000.png")
    del labels["a000"]
    reorg_train_valid(tmp_path, labels, 0.2)
    assert not any("a000" in p for p in tree(tmp_path / "train_valid_test"))


def test_mode_link(tmp_path):
    labels = sized_labels({"a": 4, "b": 4})
    make_train(tmp_path, labels)
    reorg_train_valid(tmp_path, labels, 0.25, mode="link")
    src = os.stat(tmp_path / "train" / "a000.png")
    dst = os.stat(tmp_path / "train_valid_test" / "train_valid" / "a" / "a000.png")
    assert (src.st_ino, src.st_dev) == (dst.st_ino, dst.st_dev)
    assert src.st_nlink == 3  # original + train_valid + (train or valid)


def test_mode_copy(tmp_path):
    labels = sized_labels({"a": 4, "b": 4})
    make_train(tmp_path, labels)
    reorg_train_valid(tmp_path, labels, 0.25, mode="copy")
    dst = tmp_path / "train_valid_test" / "train_valid" / "a" / "a000.png"
    assert not os.path.islink(dst)
    assert os.stat(dst).st_ino != os.stat(tmp_path / "train" / "a000.png").st_ino
    assert dst.read_bytes() == b"a000:a"
    assert os.stat(tmp_path / "train" / "a000.png").st_nlink == 1


def test_mode_symlink(tmp_path, monkeypatch):
    labels = sized_labels({"a": 4, "b": 4})
    make_train(tmp_path, labels)
    monkeypatch.chdir(tmp_path)
    reorg_train_valid(".", labels, 0.25, mode="symlink")  # relative data_dir, absolute targets
    dst = tmp_path / "train_valid_test" / "train_valid" / "b" / "b001.png"
    assert os.path.islink(dst)
    target = os.readlink(dst)
    assert os.path.isabs(target)
    assert os.path.samefile(target, tmp_path / "train" / "b001.png")
    assert dst.read_bytes() == b"b001:b"


def test_bad_mode_lists_choices(tmp_path):
    labels = sized_labels({"a": 4})
    make_train(tmp_path, labels)
    with pytest.raises(ValueError, match="link, symlink, copy"):
        reorg_train_valid(tmp_path, labels, 0.25, mode="hardlink")
    with pytest.raises(ValueError, match="link, symlink, copy"):
        reorg_test(tmp_path, mode="move")


def test_link_falls_back_to_copy(tmp_path, monkeypatch):
    labels = sized_labels({"a": 4, "b": 4})
    make_train(tmp_path, labels)
    calls = []

    def no_link(src, dst):
        calls.append(src)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(reorg.os, "link", no_link)
    reorg_train_valid(tmp_path, labels, 0.25, mode="link")
    assert len(calls) == 1  # after the first failure, copies without trying again
    t = tree(tmp_path / "train_valid_test")
    assert len(t) == 16 and t["train_valid/b/b003.png"] == b"b003:b"
    assert os.stat(tmp_path / "train" / "a000.png").st_nlink == 1


def test_links_turn_into_copies_when_refused_midway(tmp_path, monkeypatch):
    labels = sized_labels({"a": 30, "b": 30})
    make_train(tmp_path, labels)
    real, calls = os.link, []

    def limited(src, dst):  # the file system says "too many links" after 20 of them
        calls.append(src)
        if len(calls) > 20:
            raise OSError(errno.EMLINK, "Too many links")
        real(src, dst)

    monkeypatch.setattr(reorg.os, "link", limited)
    reorg_train_valid(tmp_path, labels, 0.2, mode="link")
    assert len(calls) == 21  # the refused link is the last one tried
    t = tree(tmp_path / "train_valid_test")
    assert len(t) == 120 and t["train_valid/b/b029.png"] == b"b029:b"
    srcs = [os.stat(tmp_path / "train" / f"{i}.png").st_nlink - 1 for i in labels]
    assert sum(srcs) == 20  # 20 links, the other 100 files copies


def test_a_source_that_vanishes_is_named_in_full(tmp_path, monkeypatch):
    labels = sized_labels({"a": 4, "b": 4})
    make_train(tmp_path, labels)
    listed = reorg._stem_map

    def with_ghost(folder):
        return {**listed(folder), "a999": "a999.png"}

    monkeypatch.setattr(reorg, "_stem_map", with_ghost)
    with pytest.raises(FileNotFoundError) as e:
        reorg_train_valid(tmp_path, {**labels, "a999": "a"}, 0.25)
    assert e.value.filename == str(tmp_path / "train" / "a999.png")
    assert not os.path.exists(tmp_path / "train_valid_test" / "train")


def test_crash_mid_build_keeps_previous_tree(tmp_path, monkeypatch):
    labels = sized_labels({"a": 10, "b": 10})
    make_train(tmp_path, labels)
    reorg_train_valid(tmp_path, labels, 0.2, seed=0)
    before = tree(tmp_path / "train_valid_test")
    real_link, count = os.link, [0]

    def flaky(src, dst):
        count[0] += 1
        if count[0] == 15:
            raise FileNotFoundError(src)
        real_link(src, dst)

    monkeypatch.setattr(reorg.os, "link", flaky)
    with pytest.raises(FileNotFoundError):
        reorg_train_valid(tmp_path, labels, 0.2, seed=1)
    assert tree(tmp_path / "train_valid_test") == before
    assert sorted(os.listdir(tmp_path / "train_valid_test")) == ["train", "train_valid", "valid"]


def test_leftover_temp_folders_are_cleaned(tmp_path):
    labels = sized_labels({"a": 4})
    make_train(tmp_path, labels)
    stale = tmp_path / "train_valid_test" / ".reorg-tmp-crashed"  # as a killed reorg leaves it
    (stale / "train" / "a").mkdir(parents=True)
    (stale / ".reorg-owned").write_bytes(b"")
    mine = tmp_path / "train_valid_test" / ".tmp-mine"  # the user's: not reorg's to delete
    mine.mkdir()
    (mine / "notes.txt").write_bytes(b"mine")
    reorg_train_valid(tmp_path, labels, 0.25)
    assert sorted(os.listdir(tmp_path / "train_valid_test")) == [
        ".tmp-mine", "train", "train_valid", "valid"]
    assert (mine / "notes.txt").read_bytes() == b"mine"


def test_duplicate_stems_and_bad_label_names(tmp_path):
    labels = sized_labels({"a": 3})
    make_train(tmp_path, labels)
    (tmp_path / "train" / "a000.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="two files with the id 'a000'"):
        reorg_train_valid(tmp_path, labels, 0.3)
    other = tmp_path / "o"
    bad = {"1": "../evil", "2": "../evil"}
    make_train(other, bad)
    with pytest.raises(ValueError, match="cannot be used as a folder name"):
        reorg_train_valid(other, bad, 0.3)
    assert not (other / "evil").exists()


def test_reorg_test(tmp_path):
    test = tmp_path / "test"
    test.mkdir()
    for i in range(1, 8):
        (test / f"{i}.png").write_bytes(str(i).encode())
    (test / ".DS_Store").write_bytes(b"junk")
    assert reorg_test(tmp_path) == 7
    unknown = tmp_path / "train_valid_test" / "test" / "unknown"
    assert sorted(os.listdir(unknown)) == sorted(f"{i}.png" for i in range(1, 8))
    os.remove(test / "3.png")
    assert reorg_test(tmp_path, mode="copy") == 6
    assert "3.png" not in os.listdir(unknown)
    assert (unknown / "7.png").read_bytes() == b"7"
    assert os.listdir(tmp_path / "train_valid_test") == ["test"]


def test_reorg_test_and_train_valid_coexist(tmp_path):
    labels = sized_labels({"a": 4, "b": 4})
    make_train(tmp_path, labels)
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "1.png").write_bytes(b"t")
    reorg_test(tmp_path)
    reorg_train_valid(tmp_path, labels, 0.25)
    reorg_train_valid(tmp_path, labels, 0.25, seed=3)
    assert sorted(os.listdir(tmp_path / "train_valid_test")) == ["test", "train", "train_valid", "valid"]
    assert os.listdir(tmp_path / "train_valid_test" / "test" / "unknown") == ["1.png"]


def test_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        reorg_train_valid(tmp_path, {"1": "a"}, 0.1)
    with pytest.raises(FileNotFoundError, match="test"):
        reorg_test(tmp_path)


# ----------------------------------------------------------------------------- issue 12

def test_rerun_never_deletes_files_the_user_put_in_the_tree(tmp_path):
    labels = sized_labels({"a": 5, "b": 5})
    make_train(tmp_path, labels)
    reorg_train_valid(tmp_path, labels, 0.2)
    tvt = tmp_path / "train_valid_test"
    (tvt / "train" / "my_model.pth").write_bytes(b"weights")
    (tvt / "train" / "a" / "extra.png").write_bytes(b"extra")
    before = tree(tvt)
    with pytest.raises(FileExistsError) as e:
        reorg_train_valid(tmp_path, labels, 0.2, seed=1)
    assert "'my_model.pth'" in str(e.value) and "'a/extra.png'" in str(e.value)
    assert str(tvt / "train") in str(e.value)
    assert tree(tvt) == before  # nothing changed
    os.remove(tvt / "train" / "my_model.pth")
    os.remove(tvt / "train" / "a" / "extra.png")
    reorg_train_valid(tmp_path, labels, 0.2, seed=1)  # reorg's own files it replaces
    assert split_from_tree(tmp_path)[1] == set(split_train_valid(labels, 0.2, seed=1)[1])


def test_refuses_to_replace_a_tree_it_did_not_write(tmp_path):
    labels = sized_labels({"a": 4})
    make_train(tmp_path, labels)
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "1.png").write_bytes(b"t")
    mine = tmp_path / "train_valid_test" / "valid" / "a"
    mine.mkdir(parents=True)
    (mine / "hand_made.png").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="reorg did not write it"):
        reorg_train_valid(tmp_path, labels, 0.25)
    assert (mine / "hand_made.png").read_bytes() == b"mine"
    assert not (tmp_path / "train_valid_test" / "train").exists()
    (tmp_path / "train_valid_test" / "test").write_bytes(b"a file named test")
    with pytest.raises(FileExistsError, match="reorg did not write it"):
        reorg_test(tmp_path)
    assert (tmp_path / "train_valid_test" / "test").read_bytes() == b"a file named test"


REORG = ("import sys; from d2lkaggle.data.labels import read_csv_labels; "
         "from d2lkaggle.data.reorg import reorg_train_valid; "
         "print(reorg_train_valid(sys.argv[1], read_csv_labels(sys.argv[2]), 0.2))")


def start_reorg(data_dir, labels_csv):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", REORG, str(data_dir), str(labels_csv)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_second_reorg_waits_for_the_first(tmp_path):
    import time

    from filelock import FileLock
    labels = sized_labels({"a": 30, "b": 30})
    make_train(tmp_path, labels)
    csv = tmp_path / "labels.csv"
    csv.write_text("id,label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
    held = FileLock(str(tmp_path / ".train_valid_test.lock"))
    held.acquire()  # a reorg in progress elsewhere
    p = start_reorg(tmp_path, csv)
    time.sleep(3)
    assert p.poll() is None, p.communicate()  # it waits instead of racing
    held.release()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and out.strip() == "6", err
    assert "waiting for another process" in err
    # two real ones at once: both finish, and the tree is one whole split
    ps = [start_reorg(tmp_path, csv) for _ in range(2)]
    results = [q.communicate(timeout=120) for q in ps]
    assert [q.returncode for q in ps] == [0, 0], results
    train, valid = split_from_tree(tmp_path)
    assert (train, valid) == tuple(map(set, split_train_valid(labels, 0.2)))


def test_reorg_rerun_over_an_unchanged_tree_keeps_it_and_rebuilds_on_change(tmp_path):
    """A re-run in link mode leaves an up-to-date tree alone (same links, same inodes) and
    rebuilds as soon as a source image, a label or the split changes."""
    labels = sized_labels({"cat": 6, "dog": 6})
    make_train(tmp_path, labels)
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "1.png").write_bytes(b"t")
    reorg_train_valid(tmp_path, labels, 0.25, seed=0)
    reorg_test(tmp_path)
    tv = tmp_path / "train_valid_test"
    snap = lambda: sorted((str(p.relative_to(tv)), p.stat().st_ino)  # noqa: E731
                          for p in tv.rglob("*") if p.is_file())
    before = snap()
    dirs_before = {p.name: p.stat().st_ino for p in tv.iterdir()}
    reorg_train_valid(tmp_path, labels, 0.25, seed=0)
    reorg_test(tmp_path)
    assert snap() == before
    assert {p.name: p.stat().st_ino for p in tv.iterdir()} == dirs_before  # not swapped
    # a replaced source image (a new file under the old name): the link must follow it
    src = tmp_path / "train" / "cat000.png"
    data = src.read_bytes()
    src.unlink()
    src.write_bytes(data)
    reorg_train_valid(tmp_path, labels, 0.25, seed=0)
    linked = list(tv.rglob("cat000.png"))
    assert len(linked) == 2 and all(p.stat().st_ino == src.stat().st_ino for p in linked)
    # another split: a rebuild with the new valid set
    reorg_train_valid(tmp_path, labels, 0.25, seed=3)
    _, valid = split_train_valid(labels, 0.25, 3)
    assert sorted(p.stem for p in (tv / "valid").rglob("*.png")) == sorted(valid)
    # a file the user deleted from the tree comes back
    victim = next((tv / "train_valid").rglob("*.png"))
    victim.unlink()
    reorg_train_valid(tmp_path, labels, 0.25, seed=3)
    assert victim.exists()
