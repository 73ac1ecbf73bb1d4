"""``python -m d2lkaggle.cli``: what launchers (torchrun, Paddle's, ps-lite's) start in each process."""
import sys

from . import main

sys.exit(main())
