import csv
import os

import numpy as np
from PIL import Image

from d2lkaggle.specs.competitions import get_competition
from d2lkaggle.data.demo import make_demo
import pytest


def test_cifar_layout(demo_dir):
    rows = list(csv.reader(open(os.path.join(demo_dir, "trainLabels.csv"))))
    assert rows[0] == ["id", "label"] and len(rows) == 201
    labels = [r[1] for r in rows[1:]]
    assert len(set(labels)) == 10 and min(labels.count(c) for c in set(labels)) == 20
    assert sorted(os.listdir(os.path.join(demo_dir, "train")), key=lambda f: int(f[:-4]))[0] == "1.png"
    assert len(os.listdir(os.path.join(demo_dir, "test"))) == 30
    img = Image.open(os.path.join(demo_dir, "train", "7.png"))
    assert img.size == (32, 32) and img.mode == "RGB"
    sample = list(csv.reader(open(os.path.join(demo_dir, "sampleSubmission.csv"))))
    assert sample[0] == ["id", "label"] and [r[0] for r in sample[1:]] == [str(i) for i in range(1, 31)]


def test_dog_layout(dog_dir):
    rows = list(csv.reader(open(os.path.join(dog_dir, "labels.csv"))))
    assert rows[0] == ["id", "breed"] and len(rows) == 49
    assert all(len(r[0]) == 32 and int(r[0], 16) >= 0 for r in rows[1:])
    sizes = {Image.open(os.path.join(dog_dir, "train", f)).size for f in os.listdir(os.path.join(dog_dir, "train"))}
    assert len(sizes) > 5 and all(f.endswith(".jpg") for f in os.listdir(os.path.join(dog_dir, "test")))
    sample = list(csv.reader(open(os.path.join(dog_dir, "sample_submission.csv"))))
    assert sample[0][0] == "id" and sample[0][1:] == sorted(sample[0][1:]) and len(sample[0]) == 5
    assert all(abs(sum(map(float, r[1:])) - 1) < 1e-6 for r in sample[1:])


def test_deterministic_and_replaces(tmp_path):
    a = make_demo(str(tmp_path / "a"), n_train=20, n_test=5, seed=4)
    b = make_demo(str(tmp_path / "b"), n_train=20, n_test=5, seed=4)
    for f in ("train/3.png", "test/5.png", "trainLabels.csv"):
        assert open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read()
    (tmp_path / "a" / "stale.txt").write_text("x")
    make_demo(a, n_train=20, n_test=5, seed=5)
    assert not os.path.exists(os.path.join(a, "stale.txt"))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        make_demo(str(tmp_path / "x"), layout="imagenet")
    with pytest.raises(ValueError, match="num_classes"):
        make_demo(str(tmp_path / "x"), num_classes=50)


def test_competition_specs():
    c = get_competition("cifar-10")
    assert (c.labels_file, c.id_column, c.label_column, c.sample_file, c.submission) == (
        "trainLabels.csv", "id", "label", "sampleSubmission.csv", "label")
    d = get_competition("dog-breed")
    assert (d.labels_file, d.label_column, d.sample_file, d.submission, d.image_size) == (
        "labels.csv", "breed", "sample_submission.csv", "proba", 224)
    assert d.recipe.model == "finetune"
    assert (c.recipe.model, c.recipe.lr, c.recipe.sched, c.recipe.optimizer) == (
        "airbench94", 1.5, "triangle", "nesterov")
    assert get_competition("cifar100").recipe.sched == "onecycle"   # the ResNet-18 recipe
    with pytest.raises(ValueError, match="cifar10, dog-breed"):
        get_competition("mnist")
    r = c.recipe.with_overrides(epochs=3, lr=None)
    assert r.epochs == 3 and r.lr == 1.5


def test_hard_demo_is_seeded_noisier_and_in_the_same_layout(tmp_path):
    from PIL import Image
    easy = make_demo(str(tmp_path / "easy"), n_train=40, n_test=5, seed=3)
    hard = make_demo(str(tmp_path / "hard"), n_train=40, n_test=5, seed=3, hard=True)
    again = make_demo(str(tmp_path / "again"), n_train=40, n_test=5, seed=3, hard=True)
    assert open(os.path.join(hard, "trainLabels.csv")).read() == open(
        os.path.join(easy, "trainLabels.csv")).read()

    def pixels(d, i):
        return np.asarray(Image.open(os.path.join(d, "train", f"{i}.png")), dtype=np.float64)

    assert all(np.array_equal(pixels(hard, i), pixels(again, i)) for i in range(1, 41))

    def roughness(d):  # mean absolute difference of neighbouring pixels: the noise level
        return np.mean([np.abs(np.diff(pixels(d, i), axis=1)).mean() for i in range(1, 41)])

    assert roughness(hard) > 1.5 * roughness(easy)
    assert pixels(hard, 1).shape == (32, 32, 3)


def test_dog_layout_takes_the_competitions_120_breeds(tmp_path):
    from d2lkaggle.data.demo import BREEDS
    assert len(BREEDS) == len(set(BREEDS)) == 120
    d = make_demo(str(tmp_path / "dog"), n_train=240, n_test=3, size=8, layout="dog",
                  num_classes=120)
    sample = list(csv.reader(open(os.path.join(d, "sample_submission.csv"))))
    assert sample[0][1:] == sorted(BREEDS)
    labels = [r[1] for r in list(csv.reader(open(os.path.join(d, "labels.csv"))))[1:]]
    assert {labels.count(b) for b in BREEDS} == {2}   # balanced
    with pytest.raises(ValueError, match="2..10 for the cifar10 layout"):
        make_demo(str(tmp_path / "x"), num_classes=11)


@pytest.mark.parametrize("batch_size,classes,expected", [(32, 10, 400), (32, 120, 280),
                                                         (4, 10, 30), (24, 120, 240)])
def test_book_demo_size_is_the_smallest_the_chapters_loops_run_on(tmp_path, batch_size,
                                                                   classes, expected):
    """The book's two weak spots on a tiny set: ``(i + 1) % (num_batches // 5)`` needs five
    training batches, and the validation loader's drop_last needs a full batch. Checked on the
    folders the library's reorg (the book's rule) writes, at the size and one image less."""
    from d2lkaggle.data.demo import book_demo_size
    from d2lkaggle.data.labels import read_csv_labels
    from d2lkaggle.data.reorg import reorg_train_valid
    assert book_demo_size(batch_size, classes) == expected

    def book_loops_run(n: int) -> bool:
        layout = "cifar10" if classes <= 10 else "dog"
        d = make_demo(str(tmp_path / f"d{n}"), n_train=n, n_test=1, size=8, layout=layout,
                      num_classes=classes)
        labels = read_csv_labels(os.path.join(d, "trainLabels.csv" if classes <= 10 else "labels.csv"))
        reorg_train_valid(d, labels, 0.1)
        count = lambda part: sum(len(fs) for _, _, fs in os.walk(os.path.join(d, "train_valid_test", part)))
        train, valid = count("train"), count("valid")
        return (train // batch_size) // 5 > 0 and valid // batch_size > 0

    assert book_loops_run(expected) and not book_loops_run(expected - 1)
