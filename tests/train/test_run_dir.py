"""Run directories: one run at a time, unique names in a shared storage."""

import pytest


def test_a_run_in_use_refuses_a_second_resume(tmp_path):
    """While a run trains it holds RUN/.lock; a second `--resume` of it gets one line naming the holder."""
    import os

    from emi_ray.engine.rundir import run_lock
    from emi_ray.errors import EmiError

    with run_lock(tmp_path):
        with pytest.raises(EmiError, match=rf"in use by pid {os.getpid()} on .* since"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released: the next one gets it
        pass
