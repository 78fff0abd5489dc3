"""Atomic writes: the old file survives a failed write, permissions are those of open()."""

import os
import stat

import pytest

from safety_bhn._io import atomic_write, atomic_write_text

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = atomic_write_text(tmp_path / "state.json", "old")

    def fail(f):
        f.write(b"half")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError, match="crash"):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@posix_only
def test_a_new_file_gets_the_permissions_open_would_give(tmp_path, umask_022):
    path = atomic_write_text(tmp_path / "results.md", "x")
    plain = tmp_path / "plain.md"
    plain.write_text("x")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644


@posix_only
def test_rewriting_a_file_keeps_its_permissions(tmp_path, umask_022):
    path = tmp_path / "secret.json"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_folder_lock_removes_temp_files_left_by_a_killed_writer(tmp_path):
    from safety_bhn._io import create_temp_beside, folder_lock

    (tmp_path / ".curve.csv.0a1b2c.tmp").write_text("half a file")  # piled up before
    (tmp_path / ".model.pt.new.tmp").write_text("half a model")
    fd, _ = create_temp_beside(tmp_path / "state.json")
    os.close(fd)
    (tmp_path / "curve.csv").write_text("kept")
    (tmp_path / ".draft.tmp").write_text("a user's own file: deleted too, before")
    with folder_lock(tmp_path):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".draft.tmp", ".lock", "curve.csv"]


def test_fingerprint_tells_data_apart_in_every_dtype():
    import torch

    from safety_bhn._io import fingerprint

    x = torch.arange(6.0).reshape(2, 3)
    assert fingerprint(x) == fingerprint(x.clone())
    assert fingerprint(x) != fingerprint(x.flip(0))  # same values, another order
    assert fingerprint(x) != fingerprint(x.double())  # same values, another dtype
    assert fingerprint(x) != fingerprint(x.reshape(3, 2))  # same bytes, another shape
    half = x.bfloat16()  # no NumPy type: .numpy() raised a TypeError
    assert fingerprint(half) == fingerprint(half.clone()) != fingerprint(x)
