"""Setup for all tests: without CUDA, Triton kernels run in Triton's interpreter.

Triton decides between compiling and interpreting when a kernel is decorated (when its module is
imported), so TRITON_INTERPRET must be set before that; this conftest loads before the test
modules beside it. With a CUDA device nothing is set and the kernels are compiled for real; an
explicit TRITON_INTERPRET in the environment is always left as it is.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
