"""The CIFAR-100 EfficientNetV2 write-up (a team's CIFAR-100 write-up) as a script: archive → 224 px loaders →
EfficientNetV2-S from ImageNet weights → AdamW + StepLR(10, 0.9) + CutMix p 0.5 → test
accuracy + submission.csv.

    python examples/writeup_cifar100_effnetv2.py --backend torch      # a 1,000-image subset, 3 epochs
    python examples/writeup_cifar100_effnetv2.py --full               # the write-up's run: 50,000 images, 25 epochs
    python examples/writeup_cifar100_effnetv2.py --demo --weights none --image-size 64   # offline

The data is ``cifar-100-python.tar.gz`` (``--data-dir`` names it or its folder; by default it is
downloaded into $D2LKAGGLE_DATA). ``--weights imagenet`` (the default, as in the write-up) needs
torchvision's EfficientNetV2-S file in its cache (offline: the error names file and folder);
``none`` starts from random weights. Every value comes from
``d2lkaggle.specs.writeups.get_writeup("writeup-cifar100-effnetv2")``; flags override them.
"""
import argparse
import dataclasses
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
    p.add_argument("--data-dir", help="cifar-100-python.tar.gz or a folder holding it (default: download)")
    p.add_argument("--demo", action="store_true", help="use a synthetic archive in the same format")
    p.add_argument("--full", action="store_true", help="all 50,000 + 10,000 images and the write-up's 25 epochs")
    p.add_argument("--n-train", type=int, default=1000, help="training images of the subset (default: 1000)")
    p.add_argument("--n-test", type=int, default=200, help="test images of the subset (default: 200)")
    p.add_argument("--epochs", type=int, help="default: 3 on the subset, 25 with --full")
    p.add_argument("--batch-size", type=int, help="default: the write-up's 128")
    p.add_argument("--image-size", type=int, help="default: the write-up's 224 (bilinear)")
    p.add_argument("--weights", default="imagenet",
                   help="'imagenet', a .pth/.safetensors/.npz file, or 'none' (default: imagenet)")
    p.add_argument("--label-kind", choices=("fine", "coarse"), default="fine",
                   help="CIFAR-100's 100 fine classes or 20 superclasses (default: fine)")
    p.add_argument("--out", default="runs/writeup-cifar100-effnetv2", help="run folder (default: %(default)s)")
    args = p.parse_args()

    # Obtaining the dataset: the python archive, read into memory (no PNG written).
    if args.demo:
        archive = make_demo_archive(os.path.join("data", "demo-cifar100"), "cifar100",
                                    n_train=min(args.n_train, 2000), n_test=min(args.n_test, 500))
    elif args.data_dir:
        archive = find_cifar_archive(args.data_dir) or args.data_dir
    else:
        archive = d2lkaggle.download("cifar100_python")
    arrays = read_cifar_archive(archive, args.label_kind)
    if not args.full:
        arrays = arrays.subset(args.n_train, args.n_test)
    print("# training examples:", len(arrays.train_x), " # test examples:", len(arrays.test_x),
          " # classes:", len(arrays.classes))

    # The write-up's recipe, with this run's overrides.
    w = get_writeup("writeup-cifar100-effnetv2").with_overrides(
        epochs=args.epochs or (None if args.full else 3), batch_size=args.batch_size,
        image_size=args.image_size)
    w = dataclasses.replace(w, weights=None if args.weights == "none" else args.weights)

    # Resize to 224 (bilinear) → reflect-padded crop + flip + rotation; ImageNet's mean/std,
    # which the pretrained weights expect.
    comp = get_competition("cifar100")
    mean, std = w.norm(comp)
    comp = dataclasses.replace(comp, mean=mean, std=std)
    augment = preset_transforms(w.augment, w.image_size, book=comp.augment, interpolation=w.interpolation)
    data = load_array_data(comp, arrays, batch_size=w.batch_size, valid_ratio=w.valid_ratio,
                           image_size=w.image_size, augment=augment)

    # EfficientNetV2-S, all layers trained (the write-up fine-tunes the whole network).
    bk = d2lkaggle.get_backend(args.backend)
    bk.set_seed(0)
    net = bk.create_model(w.model, len(data.classes), **w.model_kwargs())

    # AdamW (decoupled wd) + StepLR(10 epochs, 0.9) + CutMix on half of the batches.
    ckpt = os.path.join(args.out, "checkpoints")
    hist = bk.train(net, data.train_iter, data.valid_iter, w.epochs, w.lr, w.wd,
                    checkpoint_dir=ckpt, plot=os.path.join(args.out, "curves.png"),
                    **w.train_kwargs(len(data.train_iter)))

    if w.keep == "best" and os.path.exists(os.path.join(ckpt, "best.npz")):
        restore_checkpoint(bk, net, os.path.join(ckpt, "best.npz"))
    probs = bk.predict(net, data.test_iter)
    m = labelled_test_metrics(probs, data.test_labels)
    print(f"valid accuracy {hist.last['valid_acc']:.4f}, test accuracy {m['test_acc']:.4f} "
          f"({hist.examples_per_sec:.0f} examples/s)")
    print("wrote", write_submission(comp, archive, probs, data, os.path.join(args.out, "submission.csv")))
    np.save(os.path.join(args.out, "test_probs.npy"), probs)


if __name__ == "__main__":
    main()
