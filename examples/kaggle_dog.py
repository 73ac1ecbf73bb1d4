"""The Dog Breed Kaggle chapter as a script: fine-tune a frozen ResNet-34, submit probabilities.

    python examples/kaggle_dog.py --backend torch --demo --weights r34.pth   # demo, own checkpoint
    python examples/kaggle_dog.py --data-dir ../data/dog-breed-identification --weights imagenet
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
    p.add_argument("--demo", action="store_true", help="use a synthetic competition in Dog Breed layout")
    p.add_argument("--data-dir", default=os.path.join("..", "data", "dog-breed-identification"))
    p.add_argument("--weights", default="imagenet",
                   help="'imagenet', a .pth state_dict or a .safetensors/.npz neutral file; 'none' = random")
    p.add_argument("--image-size", type=int, help="224 in the chapter; 64 or 96 keep CPU runs short")
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", default=os.path.join(default_data_dir(), "examples", "kaggle_dog", "submission.csv"),
                   help="where submission.csv goes (default: %(default)s)")
    args = p.parse_args()

    comp = get_competition("dog-breed")
    if args.demo:
        data_dir = make_demo(os.path.join(default_data_dir(), "demo_dog"), n_train=200, n_test=40, size=64,
                             layout="dog")
    else:
        data_dir = args.data_dir
    size = args.image_size or (64 if args.demo else comp.image_size)
    r = comp.recipe.with_overrides(epochs=args.epochs or (4 if args.demo else None),
                                   batch_size=32 if args.demo else None)
    weights = None if args.weights == "none" else args.weights

    # Organise + augment + read: RandomResizedCrop/flip/ColorJitter/lighting for training,
    # Resize → CenterCrop for testing, ImageNet normalisation.
    data = load_data(comp, data_dir, batch_size=r.batch_size, valid_ratio=r.valid_ratio,
                     image_size=size)

    # Fine-tune: the backbone is frozen (inference mode), only the new head trains.
    bk = d2lkaggle.get_backend(args.backend)
    devices = bk.try_all_gpus()
    net = bk.finetune_net(len(data.classes), weights=weights)
    bk.train(net, data.train_iter, data.valid_iter, r.epochs, r.lr, r.wd, devices,
             r.lr_period, r.lr_decay)
    print("valid loss", bk.evaluate_loss(net, data.valid_iter, devices))

    # Retrain on all labelled data, then softmax over the classes for every test image.
    net = bk.finetune_net(len(data.classes), weights=weights)
    bk.train(net, data.train_valid_iter, None, r.epochs, r.lr, r.wd, devices, r.lr_period,
             r.lr_decay)
    probs = bk.predict(net, data.test_iter, devices)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    print("wrote", write_submission(comp, data_dir, probs, data, args.out))


if __name__ == "__main__":
    main()
