import atexit
import os
import shutil
import tempfile

import torch

# Tiny tensors: one thread is faster and keeps results independent of the core count.
torch.set_num_threads(1)

# Compiled reduced models are cached in a directory of this test session only
# (reduced_models/cache.py), so no test reads what another session or a user wrote.
os.environ["ICLDYN_CACHE"] = tempfile.mkdtemp(prefix="icldyn-test-cache-")
atexit.register(shutil.rmtree, os.environ["ICLDYN_CACHE"], ignore_errors=True)
