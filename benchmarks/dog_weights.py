"""A stand-in "pretrained" ResNet-34 for the Dog Breed figures (pretrained weights cannot be
downloaded here).

The Kaggle dog breeds are ImageNet classes, so the chapter's ImageNet ResNet-34 has seen
their kind before. The stand-in does the same on the demo's shapes: a torchvision
``resnet34`` trained in torch, briefly, on a *different* synthetic set of the same kind —
the Dog-layout demo with other seeds (1000, 1001), 64–256 px, half of the shapes small and
anywhere in the image — then saved with torchvision's names as ``.safetensors``, the file
every backend loads with ``--weights`` (docs/kaggle_dog.md). The measured sets
(``make-demo --layout dog --seed 0``) are never seen. (A first try on the demo's harder
drawing — random colours, noise, clutter — stayed at chance for two epochs: too hard to
learn from scratch in a few minutes.)

    python benchmarks/dog_weights.py /tmp/i25/resnet34-standin.safetensors
    python benchmarks/dog_weights.py OUT --images 3000 --epochs 6 --size 64   # the defaults

Never commit the file (85 MB); it takes ~15 minutes on 2 CPU cores (torch, bf16 where the
CPU has it).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def pretraining_set(folder: str, images: int, seed: int) -> tuple[list[str], list[int]]:
    """Half normal, half small off-centre subjects, 64–256 px JPEGs."""
    from d2lkaggle.data.demo import SHAPES, make_demo
    from d2lkaggle.data.labels import read_csv_labels
    from d2lkaggle.data.demo import BREEDS
    paths, labels = [], []
    for k, small in enumerate((False, True)):
        d = make_demo(os.path.join(folder, f"part{k}"), n_train=images // 2, n_test=1,
                      size=64, max_size=256, seed=seed + k, layout="dog",
                      small_subjects=small)
        for i, breed in sorted(read_csv_labels(os.path.join(d, "labels.csv")).items()):
            paths.append(os.path.join(d, "train", f"{i}.jpg"))
            labels.append(BREEDS.index(breed))
    assert len(SHAPES) == len(BREEDS)
    return paths, labels


def train(out: str, images: int, epochs: int, size: int, seed: int, batch: int = 32,
          lr: float = 1e-3, log=print) -> dict:
    import numpy as np
    import torch
    import torchvision

    from d2lkaggle.data.loader import FileSource, ImageLoader
    from d2lkaggle.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, Compose,
                                           RandomHorizontalFlip, RandomResizedCrop)
    from d2lkaggle.models.weights import save_neutral

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="d2lk-standin-") as tmp:
        paths, labels = pretraining_set(tmp, images, seed)
        tf = Compose([RandomResizedCrop(size, scale=(0.3, 1.0)), RandomHorizontalFlip()])
        loader = ImageLoader(FileSource(paths), labels, batch, transform=tf, shuffle=True,
                             drop_last=True, seed=seed)
        net = torchvision.models.resnet34(num_classes=10).to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, epochs=epochs,
                                                    steps_per_epoch=len(loader))
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
        bf16 = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
        t0 = time.perf_counter()
        for epoch in range(epochs):
            net.train()
            loader.set_epoch(epoch)
            tot, right, n = 0.0, 0, 0
            for x, y in loader:
                xb = (torch.from_numpy(x).permute(0, 3, 1, 2).float() - mean) / std
                xb = xb.contiguous(memory_format=torch.channels_last)
                yb = torch.from_numpy(y)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    z = net(xb)
                loss = torch.nn.functional.cross_entropy(z.float(), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                tot += float(loss.detach()) * len(y)
                right += int((z.argmax(1) == yb).sum())
                n += len(y)
            log(f"epoch {epoch + 1}/{epochs}: train loss {tot / n:.4f}, acc {right / n:.3f} "
                f"({time.perf_counter() - t0:.0f} s)", flush=True)
        state = {k: v.detach().float().numpy() for k, v in net.state_dict().items()
                 if not k.endswith("num_batches_tracked")}
    save_neutral(out, state)
    return {"train_loss": tot / n, "train_acc": right / n, "seconds": time.perf_counter() - t0,
            "bf16": bf16, "arrays": len(state), "file": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the .safetensors file to write")
    ap.add_argument("--images", type=int, default=3000, help="pretraining images (default: 3000)")
    ap.add_argument("--epochs", type=int, default=6, help="epochs (default: 6)")
    ap.add_argument("--size", type=int, default=64, help="training crop side (default: 64)")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the set and the net (default: 1000)")
    a = ap.parse_args(argv)
    if not a.out.endswith(".safetensors"):
        ap.error("OUT must end with .safetensors")
    r = train(a.out, a.images, a.epochs, a.size, a.seed)
    print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
