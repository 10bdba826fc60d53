"""Atomic outputs: complete or absent, with the permissions a plain open() would give."""
import os
import stat

import pytest

from mrdflow.atomic import atomic_open


def test_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write("half")
            raise RuntimeError("killed")
    assert not target.exists() and not list(tmp_path.iterdir())


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o027)
    try:
        import importlib

        import mrdflow.atomic as atomic

        importlib.reload(atomic)
        with atomic.atomic_open(tmp_path / "a.txt") as fh:
            fh.write("x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)
        importlib.reload(atomic)
