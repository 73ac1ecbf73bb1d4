"""Where a torch training step's time goes, in one process: the shipped ``Step`` fed by its
loader against the same step on one batch held in memory, then the library's ResNet-18 against
the chapter's own ``resnet18`` in one plain ``torch.optim.SGD`` loop on a held batch.

    python benchmarks/step_probe.py [--batch 32] [--steps 20] [--rounds 3]

Settings alternate round by round, so load from elsewhere hits both alike. Uses the benchmark
cache's 2,560-image demo set (``python -m benchmarks`` builds it; made here if missing).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rate(step_fn, batch: int, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        step_fn()
    return batch * steps / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)

    import torch
    from benchmarks.run import demo_set
    from benchmarks.textbook import torch_cifar as book
    from benchmarks.worker import _loaders
    from d2lkaggle import torch_impl as T

    data = _loaders(demo_set(2560), a.batch)
    T.set_seed(0)
    step = T.Step(T.resnet18(10), lr=0.02, wd=5e-4, momentum=0.9,
                  mean=data.train_iter.mean, std=data.train_iter.std)
    state = {"it": iter(data.train_iter)}
    held = next(state["it"])

    def from_loader():
        try:
            x, y = next(state["it"])
        except StopIteration:
            state["it"] = iter(data.train_iter)
            x, y = next(state["it"])
        step.train_batch(x, y)

    def plain(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
        x = torch.randn(a.batch, 3, 32, 32)
        y = torch.randint(0, 10, (a.batch,))
        net.train()

        def one():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            loss.item()   # the metric read every step, as the chapter does
        return one

    ours_net = plain(T.resnet18(10))
    book_net = book.resnet18(10, 3)
    book_net(torch.zeros(2, 3, 32, 32))  # the chapter's lazy layers need one forward
    book_loop = plain(book_net)
    def on_held():
        step.train_batch(*held)

    for warm in (on_held, ours_net, book_loop):
        warm()
    amp = "bf16 + channels_last" if getattr(step, "amp", False) else "fp32"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, step in {amp}, "
          f"batch {a.batch}, {a.steps} steps per figure (examples/s)")
    for r in range(a.rounds):
        print(f"round {r + 1}: Step + loader {_rate(from_loader, a.batch, a.steps):6.1f}   "
              f"Step, held batch {_rate(on_held, a.batch, a.steps):6.1f}"
              f"   plain loop, our resnet18 {_rate(ours_net, a.batch, a.steps):6.1f}   "
              f"plain loop, the book's {_rate(book_loop, a.batch, a.steps):6.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
