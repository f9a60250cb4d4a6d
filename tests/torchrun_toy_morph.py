"""The morph command line on the toy job of test_morph (no FRLL, no real networks), for launching under
torchrun in test_morph.py: python -m torch.distributed.run --nproc-per-node 2 tests/torchrun_toy_morph.py ..."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from test_morph import FakeJob  # noqa: E402

from adjointlib.morph import __main__ as cli  # noqa: E402

cli.load_face_model = lambda path: None
cli.MorphJob = lambda model, device: (torch.manual_seed(0), FakeJob())[1]  # the same toy weights in every process
cli.main(sys.argv[1:])
