"""The CIFAR-10 MixUp write-up (a CIFAR-10 challenge notebook) as a script: archive → loaders → ELU CNN → Adam +
CyclicLR triangular2 + MixUp 0.4 → best checkpoint → test accuracy + submission.csv.

    python examples/writeup_cifar10_mixup.py --backend torch          # a 5,000-image subset, 20 epochs
    python examples/writeup_cifar10_mixup.py --full                   # the notebook's run: 50,000 images, 200 epochs
    python examples/writeup_cifar10_mixup.py --demo                   # a synthetic archive, no download

The data is torchvision's ``cifar-10-python.tar.gz`` (``--data-dir`` names it or its folder;
by default it is downloaded into $D2LKAGGLE_DATA). Every value comes from
``d2lkaggle.specs.writeups.get_writeup("writeup-cifar10-mixup")``; flags override them.
"""
import argparse
import os

import numpy as np

import d2lkaggle
from d2lkaggle.data.transforms import preset_transforms
from d2lkaggle.data.cifar import find_cifar_archive, make_demo_archive, read_cifar_archive
from d2lkaggle.specs.competitions import get_competition
from d2lkaggle.compete.load import load_array_data
from d2lkaggle.compete.report import labelled_test_metrics
from d2lkaggle.compete.submission import write_submission
from d2lkaggle.specs.writeups import get_writeup, restore_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="torch", help="torch, mxnet or paddle (default: torch)")
    p.add_argument("--data-dir", help="cifar-10-python.tar.gz or a folder holding it (default: download)")
    p.add_argument("--demo", action="store_true", help="use a synthetic archive in the same format")
    p.add_argument("--full", action="store_true", help="all 50,000 + 10,000 images and the notebook's 200 epochs")
    p.add_argument("--n-train", type=int, default=5000, help="training images of the subset (default: 5000)")
    p.add_argument("--n-test", type=int, default=1000, help="test images of the subset (default: 1000)")
    p.add_argument("--epochs", type=int, help="default: 20 on the subset, 200 with --full")
    p.add_argument("--batch-size", type=int, help="default: the write-up's 32")
    p.add_argument("--out", default="runs/writeup-cifar10-mixup", help="run folder (default: %(default)s)")
    args = p.parse_args()

    # Obtaining the dataset: the python archive, read into memory (no PNG written).
    if args.demo:
        archive = make_demo_archive(os.path.join("data", "demo-cifar10"), "cifar10",
                                    n_train=min(args.n_train, 2000), n_test=min(args.n_test, 500))
    elif args.data_dir:
        archive = find_cifar_archive(args.data_dir) or args.data_dir
    else:
        archive = d2lkaggle.download("cifar10_python")
    arrays = read_cifar_archive(archive)
    if not args.full:
        arrays = arrays.subset(args.n_train, args.n_test)
    print("# training examples:", len(arrays.train_x), " # test examples:", len(arrays.test_x))

    # The write-up's recipe, with this run's overrides.
    w = get_writeup("writeup-cifar10-mixup").with_overrides(
        epochs=args.epochs or (None if args.full else 20), batch_size=args.batch_size)

    # Image augmentation (RandomCrop 32 pad 4 + flip) and the loaders (train/valid split).
    comp = get_competition("cifar10")
    augment = preset_transforms(w.augment, w.image_size, book=comp.augment, interpolation=w.interpolation)
    data = load_array_data(comp, arrays, batch_size=w.batch_size, valid_ratio=w.valid_ratio,
                           image_size=w.image_size, augment=augment)

    # The ELU + BatchNorm CNN (He init; it returns logits, so one softmax, in the loss).
    bk = d2lkaggle.get_backend(args.backend)
    bk.set_seed(42)
    net = bk.create_model(w.model, len(data.classes), **w.model_kwargs())

    # Adam (coupled wd) + CyclicLR triangular2 stepped after every batch + MixUp on every batch.
    ckpt = os.path.join(args.out, "checkpoints")
    hist = bk.train(net, data.train_iter, data.valid_iter, w.epochs, w.lr, w.wd,
                    checkpoint_dir=ckpt, plot=os.path.join(args.out, "curves.png"),
                    **w.train_kwargs(len(data.train_iter)))

    # The best checkpoint (chosen on validation, not on the test set as the notebook did).
    if w.keep == "best" and os.path.exists(os.path.join(ckpt, "best.npz")):
        restore_checkpoint(bk, net, os.path.join(ckpt, "best.npz"))
    probs = bk.predict(net, data.test_iter)
    m = labelled_test_metrics(probs, data.test_labels)
    print(f"best valid accuracy {hist.best_valid_acc:.4f}, test accuracy {m['test_acc']:.4f} "
          f"({hist.examples_per_sec:.0f} examples/s)")
    print("wrote", write_submission(comp, archive, probs, data, os.path.join(args.out, "submission.csv")))
    np.save(os.path.join(args.out, "test_probs.npy"), probs)


if __name__ == "__main__":
    main()
