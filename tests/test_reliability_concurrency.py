"""Concurrent writers queue on the lock; readers see the old or the new file, never a broken one."""

import subprocess
import threading
import time

import numpy as np
import pytest
from fault_injection import ENV, ROOT, committed, icldyn, synthetic_intact, writer_argv

from dynamics import store
from dynamics.errors import UsageError
from dynamics.trajectory import Trajectory


def _traj():
    return {"ode": Trajectory("ode", [0.0, 1.0], [1.0, 0.5], {"x": np.ones((2, 1))})}


def test_second_writer_waits_for_the_lock(tmp_path):
    path = str(tmp_path / "c.h5")
    store.write_run(path, "e", {}, 0, _traj(), "complete", {})
    with store._locked(path):
        writer = threading.Thread(target=store.write_run,
                                  args=(path, "e", {}, 1, _traj(), "complete", {}))
        writer.start()
        time.sleep(0.5)
        assert writer.is_alive() and set(store.describe(path)["runs"]) == {"e-0001"}
    writer.join(timeout=30)
    assert set(store.describe(path)["runs"]) == {"e-0001", "e-0002"}


def test_a_writer_that_cannot_get_the_lock_fails_with_one_clear_line(tmp_path):
    path = str(tmp_path / "c.h5")
    with (store._locked(path),
          pytest.raises(UsageError, match=r"c\.h5: another process is writing to it"),
          store._locked(path, timeout=0.2)):
        pass


def test_two_writer_processes_and_a_reader_never_corrupt_the_file(tmp_path):
    path = str(tmp_path / "c.h5")
    count = 8
    procs = [subprocess.Popen(writer_argv(path, tag, count, 5000), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
             for tag in (1, 2)]
    seen = []
    while any(p.poll() is None for p in procs):
        try:
            seen.append(len(store.describe(path)["runs"]))
        except UsageError as exc:
            assert "no such file" in str(exc)  # before the first write only
            assert not seen
    outs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    reported = {rid: v for out, _ in outs for rid, v in committed(out).items()}
    assert len(reported) == 2 * count
    assert all(synthetic_intact(path, rid, v) for rid, v in reported.items())
    assert seen == sorted(seen)  # a reader sees each write whole, in order
    assert len(store.describe(path)["runs"]) == 2 * count


def test_icldyn_show_reads_while_another_process_writes(tmp_path):
    path = str(tmp_path / "c.h5")
    store.write_run(path, "e", {}, 0, _traj(), "complete", {})
    writer = subprocess.Popen(writer_argv(path, 3, 200, 20_000), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT)
    try:
        proc = icldyn("show", path, "--json")
        assert writer.poll() is None, "the writer finished first: nothing was tested"
    finally:
        writer.kill()
        writer.wait()
    assert proc.returncode == 0 and '"e-0001"' in proc.stdout
