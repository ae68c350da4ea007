import atexit
import os
import shutil
import tempfile

import torch

# Progress lines (every 30 s in a log) would add lines to the stderr that tests count;
# tests/test_progress.py sets its own interval.
os.environ.setdefault("ICLDYN_PROGRESS_SECONDS", "3600")

# Tiny tensors: one thread is faster and keeps results independent of the core count.
torch.set_num_threads(1)

# Compiled reduced models are cached in a directory of this test session only
# (reduced_models/cache.py), so no test reads what another session or a user wrote.
os.environ["ICLDYN_CACHE"] = tempfile.mkdtemp(prefix="icldyn-test-cache-")
atexit.register(shutil.rmtree, os.environ["ICLDYN_CACHE"], ignore_errors=True)
