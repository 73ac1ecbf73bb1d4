"""The textbook's side of ``python -m benchmarks``: the CIFAR-10 Kaggle chapter's own code.

Transcribed from *Dive into Deep Learning* (Zhang, Lipton, Li, Smola; https://d2l.ai,
CC BY-SA 4.0), chapter "Image Classification (CIFAR-10) on Kaggle" (PyTorch and MXNet tabs,
/work/shared/seeds/000_*.txt) and, for Paddle, the Chinese edition's Paddle tab of the Kaggle
chapters (seeds/002_*.txt: ``DatasetFolder`` + ``paddle.io.DataLoader`` + Momentum/StepDecay),
together with the few ``d2l`` library functions the chapter calls (``d2l.resnet18``,
``d2l.Residual``, ``d2l.train_batch_ch13``, ``d2l.accuracy``, ``d2l.Accumulator``,
``d2l.split_batch``) as ``d2l==1.0.3`` defines them.

Why a transcription and not ``import d2l``: ``pip download d2l==1.0.3 --no-deps`` works from
this machine's index, but ``d2l/torch.py`` and ``d2l/mxnet.py`` import IPython,
``matplotlib_inline`` and scipy at module level (none installed here, all for plotting and
other chapters), and 1.0.3 has no Paddle module at all. The functions below keep the
package's code path: per-batch ``float(...)`` metric syncs (``Accumulator.add``), summed
losses with ``reduction="none"``, ``nn.DataParallel``/``split_and_load`` wrappers, the book's
transforms and data loaders with their default worker counts.

Deliberate differences (each the only way to run the chapter on a CPU, or not a cost the
book's figure includes): ``devices = [cpu]`` (``d2l.try_all_gpus()`` returns ``[]`` without a
GPU, and ``devices[0]`` would fail); lazy modules get one dummy forward before the
optimizer is made; the ``Animator`` (a plot redrawn five times per epoch) is not drawn.
"""
