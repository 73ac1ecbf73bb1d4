"""The CIFAR-10 Kaggle chapter as a script: organise → augment → read → model → train → submit.

    python examples/kaggle_cifar10.py --backend torch --demo          # built-in demo data
    python examples/kaggle_cifar10.py --data-dir ../data/cifar-10     # the real competition
"""
import argparse
import os

import d2lkaggle
from d2lkaggle.specs.competitions import get_competition
from d2lkaggle.data.demo import make_demo
from d2lkaggle.data.hub import default_data_dir  # $D2LKAGGLE_DATA or ~/.cache/d2lkaggle: nothing lands in the repo
from d2lkaggle.compete.load import load_data
from d2lkaggle.compete.submission import write_submission


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="torch")
    p.add_argument("--demo", action="store_true", help="use the built-in synthetic competition")
    p.add_argument("--demo-size", type=int, default=1000, help="demo training images (default: %(default)s)")
    p.add_argument("--data-dir", default=os.path.join("..", "data", "cifar-10"))
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", default=os.path.join(default_data_dir(), "examples", "kaggle_cifar10", "submission.csv"),
                   help="where submission.csv goes (default: %(default)s)")
    args = p.parse_args()

    # Obtaining and organising the dataset (the demo is drawn locally: no download needed).
    comp = get_competition("demo" if args.demo else "cifar10")
    data_dir = make_demo(os.path.join(default_data_dir(), "demo_cifar10"), n_train=args.demo_size,
                         n_test=args.demo_size // 5) if args.demo else args.data_dir
    labels = d2lkaggle.read_csv_labels(os.path.join(data_dir, comp.labels_file))
    print("# training examples:", len(labels), " # classes:", len(set(labels.values())))

    # Image augmentation + reading the dataset: seeded numpy loaders, uint8 batches.
    r = comp.recipe.with_overrides(epochs=args.epochs)
    data = load_data(comp, data_dir, batch_size=r.batch_size, valid_ratio=r.valid_ratio)

    # Defining the model and training it with validation.
    bk = d2lkaggle.get_backend(args.backend)
    devices = bk.try_all_gpus()
    bk.set_seed(0)
    net = bk.resnet18(len(data.classes), 3, r.width)
    bk.train(net, data.train_iter, data.valid_iter, r.epochs, r.lr, r.wd, devices,
             r.lr_period, r.lr_decay)

    # Classifying the testing set: retrain on all labelled data, predict, submit.
    bk.set_seed(0)
    net = bk.resnet18(len(data.classes), 3, r.width)
    bk.train(net, data.train_valid_iter, None, r.epochs, r.lr, r.wd, devices, r.lr_period,
             r.lr_decay)
    probs = bk.predict(net, data.test_iter, devices)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    print("wrote", write_submission(comp, data_dir, probs, data, args.out))


if __name__ == "__main__":
    main()
