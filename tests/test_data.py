"""Tests for safety_bhn.data: IDX files, dataset loading, embedded copy and download."""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from safety_bhn.data import (
    DataError,
    DatasetName,
    download,
    embedded_mnist,
    load_dataset,
    read_idx,
    resolve_data_dir,
    write_idx,
)
from safety_bhn.data import datasets as ds_mod

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tests must not touch the network")

    monkeypatch.setattr(ds_mod.urllib.request, "urlopen", refuse)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SAFETY_BHN_DATA; the default cache dir points into tmp_path."""
    monkeypatch.delenv(ds_mod.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "safety_bhn"


def make_split(
    root: Path,
    folder: str = "mnist",
    prefix: str = "train",
    n: int = 20,
    *,
    gz: bool = True,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Write a small images/labels IDX pair under root/folder and return the arrays."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    if images is None:
        images = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    if labels is None:
        labels = (np.arange(len(images)) % 10).astype(np.uint8)
    write_idx(root / folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(root / folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return images, labels


# IDX reader / writer


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_roundtrip(tmp_path: Path, suffix: str) -> None:
    images = RNG.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], np.uint8)
    write_idx(tmp_path / f"img{suffix}", images)
    write_idx(tmp_path / f"lbl{suffix}", labels)
    got_images = read_idx(tmp_path / f"img{suffix}")
    got_labels = read_idx(tmp_path / f"lbl{suffix}")
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.flags.writeable


def test_idx_file_format(tmp_path: Path) -> None:
    raw = write_idx(tmp_path / "a", np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert raw.read_bytes() == bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 0, 1, 2, 3, 4, 5])
    gz = write_idx(tmp_path / "a.gz", np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert gzip.decompress(gz.read_bytes()) == raw.read_bytes()


def test_empty_files_and_too_many_dimensions_are_named(tmp_path: Path) -> None:
    """0 images were loaded (training then failed with 'val_size must lie in [0, 0)'), and a
    header of 65 dimensions failed in NumPy, naming no file."""
    make_split(tmp_path, n=0)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz holds no images"):
        load_dataset("mnist", "train", tmp_path)
    (tmp_path / "deep").write_bytes(bytes([0, 0, 8, 65]) + bytes(4 * 65))
    with pytest.raises(DataError, match="deep: header announces 65 dimensions, more than"):
        read_idx(tmp_path / "deep")


def test_idx_gzip_detected_by_magic_not_suffix(tmp_path: Path) -> None:
    arr = np.arange(10, dtype=np.uint8)
    gz_without_suffix = write_idx(tmp_path / "x.gz", arr).rename(tmp_path / "x-gz")
    raw_with_suffix = write_idx(tmp_path / "y", arr).rename(tmp_path / "y.gz")
    np.testing.assert_array_equal(read_idx(gz_without_suffix), arr)
    np.testing.assert_array_equal(read_idx(raw_with_suffix), arr)


def test_write_idx_gzip_is_deterministic(tmp_path: Path) -> None:
    arr = RNG.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    a = write_idx(tmp_path / "a.gz", arr).read_bytes()
    b = write_idx(tmp_path / "b.gz", arr).read_bytes()
    assert a == b
    assert a[4:8] == b"\x00\x00\x00\x00"  # gzip mtime field


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_other_dtypes_roundtrip(tmp_path: Path, dtype: type) -> None:
    arr = np.arange(-6, 6).reshape(3, 4).astype(dtype)
    got = read_idx(write_idx(tmp_path / "a.gz", arr))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, arr)


def test_write_idx_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="IDX cannot store dtype"):
        write_idx(tmp_path / "a", np.zeros(3, np.uint64))


def test_read_idx_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataError, match="bad IDX magic number") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "img", np.zeros((3, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x01")
    with pytest.raises(DataError, match="truncated header"):
        read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "img.gz", RNG.integers(0, 256, (50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="corrupt gzip stream"):
        read_idx(path)


def test_read_idx_extra_bytes(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "lbl", np.arange(5, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00\x00")
    with pytest.raises(DataError, match="2 unexpected extra bytes") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "nope")


# load_dataset on small synthetic files


@pytest.mark.parametrize("gz", [True, False])
def test_load_dataset_small(tmp_path: Path, gz: bool) -> None:
    images, labels = make_split(tmp_path, "fashion-mnist", "t10k", 12, gz=gz)
    x, y = load_dataset("fashion_mnist", "test", tmp_path)
    assert x.shape == (12, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (12,) and y.dtype == torch.int64
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    torch.testing.assert_close(x, torch.from_numpy(images).unsqueeze(1).float() / 255)
    assert y.tolist() == labels.tolist()
    xu, yu = load_dataset(DatasetName.FASHION_MNIST, "test", str(tmp_path), normalize=False)
    assert xu.dtype == torch.uint8 and xu.shape == (12, 1, 28, 28)
    assert torch.equal(xu[:, 0], torch.from_numpy(images))
    assert torch.equal(yu, y)


def test_load_dataset_count_mismatch(tmp_path: Path) -> None:
    make_split(tmp_path, n=10, labels=np.zeros(9, np.uint8))
    with pytest.raises(DataError, match="count mismatch.*10 images.*9 labels"):
        load_dataset("mnist", "train", tmp_path)


def test_load_dataset_labels_out_of_range(tmp_path: Path) -> None:
    make_split(tmp_path, n=4, labels=np.array([0, 1, 10, 2], np.uint8))
    with pytest.raises(DataError, match=r"outside 0\.\.9.*index 2") as info:
        load_dataset("mnist", "train", tmp_path)
    assert "train-labels-idx1-ubyte.gz" in str(info.value)


def test_load_dataset_wrong_image_size(tmp_path: Path) -> None:
    make_split(tmp_path, images=np.zeros((3, 5, 5), np.uint8))
    with pytest.raises(DataError, match="5x5, expected 28x28"):
        load_dataset("mnist", "train", tmp_path)


def test_load_dataset_wrong_magic(tmp_path: Path) -> None:
    make_split(tmp_path, images=np.zeros(3, np.uint8), labels=np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"wrong magic number 2049 \(0x00000801\); expected 2051"):
        load_dataset("mnist", "train", tmp_path)


def test_load_dataset_missing_lists_paths_and_fixes(tmp_path: Path, clean_env: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", root)
    msg = str(info.value)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert str(root / "mnist" / f"{stem}.gz") in msg
        assert str(root / "mnist" / stem) in msg
    assert "does not exist" in msg
    assert "data_dir= (--data-dir on the command line)" in msg
    assert "SAFETY_BHN_DATA" not in msg  # a data_dir given overrides it: no fix there
    assert "safety_bhn.data.download('mnist'" in msg
    assert "embedded_mnist('test')" in msg
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError, match="that is a file, not a folder"):
        load_dataset("mnist", "test", tmp_path / "a_file")
    with pytest.raises(DataError, match="set SAFETY_BHN_DATA=<dir>"):  # where it is read
        load_dataset("mnist", "test")  # the fixture's empty cache dir


def test_load_dataset_missing_labels_only(tmp_path: Path) -> None:
    make_split(tmp_path, "fashion-mnist")
    (tmp_path / "fashion-mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="not found") as info:
        load_dataset("fashion_mnist", "train", tmp_path)
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz  (found)" in msg
    assert "train-labels-idx1-ubyte  (missing)" in msg
    assert "embedded_mnist" not in msg


def test_load_dataset_extra_missing_says_not_downloadable(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot be downloaded") as info:
        load_dataset("mnist", "extra", tmp_path)
    assert str(tmp_path / "mnist-extra5k" / "extra-images-idx3-ubyte.gz") in str(info.value)


def test_unknown_dataset_name() -> None:
    with pytest.raises(ValueError, match="unknown dataset name 'mnsit'") as info:
        load_dataset("mnsit")
    msg = str(info.value)
    assert "Did you mean 'mnist'?" in msg and "'fashion_mnist'" in msg
    with pytest.raises(ValueError, match="Did you mean 'fashion_mnist'"):
        download("fashion")


def test_dataset_name_aliases(tmp_path: Path) -> None:
    make_split(tmp_path, "fashion-mnist", n=3)
    assert len(load_dataset("Fashion-MNIST", data_dir=tmp_path)[0]) == 3


def test_unknown_split() -> None:
    with pytest.raises(ValueError, match="unknown split 'tset'.*Did you mean 'test'"):
        load_dataset("mnist", "tset")
    with pytest.raises(ValueError, match="only for 'mnist'"):
        load_dataset("fashion_mnist", "extra")
    with pytest.raises(ValueError, match="unknown split 'extra'"):
        embedded_mnist("extra")


# data-dir resolution


def test_env_var_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    images, _ = make_split(tmp_path / "env", n=5)
    monkeypatch.setenv("SAFETY_BHN_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    x, _ = load_dataset("mnist", normalize=False)
    assert torch.equal(x[:, 0], torch.from_numpy(images))
    make_split(tmp_path / "arg", n=3)
    assert len(load_dataset("mnist", data_dir=tmp_path / "arg")[0]) == 3


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clean_env: Path) -> None:
    assert resolve_data_dir() == clean_env
    with pytest.raises(DataError, match="default cache dir"):
        load_dataset("mnist")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "safety_bhn"
    monkeypatch.setenv("SAFETY_BHN_DATA", "")
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "safety_bhn"
    assert resolve_data_dir(tmp_path / "d") == tmp_path / "d"


# the shared data folder and the embedded copy


def test_shared_mnist_train(shared_data_dir: Path) -> None:
    x, y = load_dataset("mnist", "train", shared_data_dir)
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32
    assert torch.bincount(y, minlength=10).tolist() == [500] * 10
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_shared_mnist_test(shared_data_dir: Path) -> None:
    x, y = load_dataset("mnist", "test", shared_data_dir)
    assert x.shape == (10000, 1, 28, 28)
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_shared_mnist_extra(shared_data_dir: Path) -> None:
    x, y = load_dataset("mnist", "extra", shared_data_dir)
    assert x.shape == (5000, 1, 28, 28) and y.shape == (5000,)
    assert torch.bincount(y, minlength=10).tolist()[:3] == [501, 627, 491]


def test_shared_fashion_mnist_test(shared_data_dir: Path) -> None:
    x, y = load_dataset("fashion_mnist", "test", shared_data_dir, normalize=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y, minlength=10).tolist() == [1000] * 10


@pytest.mark.parametrize("split", ["train", "test"])
def test_embedded_equals_shared(shared_data_dir: Path, split: str) -> None:
    x, y = embedded_mnist(split)
    x_ref, y_ref = load_dataset("mnist", split, shared_data_dir)
    assert x.dtype == x_ref.dtype == torch.float32
    assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    xu, _ = embedded_mnist(split, normalize=False)
    assert xu.dtype == torch.uint8 and torch.equal(xu.float() / 255, x)


def test_embedded_counts() -> None:
    x, y = embedded_mnist("train")
    assert x.shape == (5000, 1, 28, 28) and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [500] * 10


def test_embedded_corrupt_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ds_mod._EMBEDDED_SHA256, "t10k-labels-idx1-ubyte", "0" * 64)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is corrupt: sha256"):
        embedded_mnist("test")


# download (never touches the network: _fetch is replaced)


def _fake_fetch(payloads: dict[str, bytes], calls: list[str]):
    def fetch(url: str, dest: Path) -> None:
        calls.append(url)
        dest.write_bytes(payloads[url.rsplit("/", 1)[-1]])

    return fetch


def _tiny_official_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Small MNIST files, made the official ones (their md5s stand in for the real ones)."""
    src = tmp_path / "src"
    make_split(src, "mnist", "train", 6)
    make_split(src, "mnist", "t10k", 4)
    payloads = {p.name: p.read_bytes() for p in (src / "mnist").iterdir()}
    for file_name, data in payloads.items():
        monkeypatch.setitem(ds_mod._MD5, f"mnist/{file_name}", hashlib.md5(data).hexdigest())
    return payloads


def test_download_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = _tiny_official_files(tmp_path, monkeypatch)
    calls: list[str] = []
    monkeypatch.setattr(ds_mod, "_fetch", _fake_fetch(payloads, calls))
    root = tmp_path / "data"
    assert download("mnist", root) == root
    assert len(calls) == 4 and all(u.startswith("https://ossci-datasets.s3") for u in calls)
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(payloads)
    if os.name == "posix":  # shared data folders stay readable: open()'s mode, not mkstemp's 0o600
        probe = tmp_path / "probe"
        probe.write_text("")
        probe_mode = probe.stat().st_mode & 0o777
        assert {p.stat().st_mode & 0o777 for p in (root / "mnist").iterdir()} == {probe_mode}
    assert len(load_dataset("mnist", "train", root)[0]) == 6
    assert len(load_dataset("mnist", "test", root)[0]) == 4
    calls.clear()
    download("mnist", root, splits=["test"])
    assert calls == []  # present with the right checksum: skipped


def test_download_falls_back_to_second_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payloads = _tiny_official_files(tmp_path, monkeypatch)
    calls: list[str] = []
    good = _fake_fetch(payloads, calls)

    def flaky(url: str, dest: Path) -> None:
        if "ossci" in url:
            calls.append(url)
            raise urllib.error.URLError("no route")
        good(url, dest)

    monkeypatch.setattr(ds_mod, "_fetch", flaky)
    download("mnist", tmp_path / "data", splits="test")
    hosts = [u.split("/")[2] for u in calls]
    assert hosts == ["ossci-datasets.s3.amazonaws.com", "yann.lecun.com"] * 2
    assert len(load_dataset("mnist", "test", tmp_path / "data")[0]) == 4


def test_download_checksum_mismatch_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    payloads = {"train-images-idx3-ubyte.gz": b"not the real file"}
    monkeypatch.setattr(ds_mod, "_fetch", _fake_fetch(payloads, calls))
    root = tmp_path / "data"
    with pytest.raises(DataError, match="md5 mismatch") as info:
        download("mnist", root, splits=("train",))
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in str(info.value)
    assert "checksum differs" in str(info.value) and "internet" not in str(info.value)
    assert len(calls) == 2  # both mirrors tried
    assert list((root / "mnist").iterdir()) == []  # no final file, no temp file


def test_download_names_a_local_failure_and_tries_no_other_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payloads = _tiny_official_files(tmp_path, monkeypatch)
    calls: list[str] = []
    monkeypatch.setattr(ds_mod, "_fetch", _fake_fetch(payloads, calls))
    root = tmp_path / "data"
    (root / "mnist" / "t10k-images-idx3-ubyte.gz").mkdir(parents=True)  # in the file's way
    with pytest.raises(DataError, match="with the right checksum, but could not move it") as info:
        download("mnist", root, splits="test")
    assert "internet" not in str(info.value)  # was: every mirror failed, check the internet
    assert len(calls) == 1  # fetched again from every mirror before
    assert [p.name for p in (root / "mnist").iterdir()] == ["t10k-images-idx3-ubyte.gz"]


def test_an_empty_data_dir_is_refused_not_read_as_this_folder() -> None:
    with pytest.raises(ValueError, match="data_dir is an empty string"):
        load_dataset("mnist", "test", "")


def test_download_rejects_extra_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown split 'extra'"):
        download("mnist", tmp_path, splits=("extra",))
    assert not (tmp_path / "mnist").exists()


def test_select_classes_relabels_in_the_given_order_and_names_bad_input():
    from safety_bhn.data import select_classes

    x, y = torch.arange(6.0).unsqueeze(1), torch.tensor([4, 0, 9, 4, 2, 9])
    xs, ys = select_classes(x, y, [9, 4])
    assert xs.squeeze(1).tolist() == [0.0, 2.0, 3.0, 5.0] and ys.tolist() == [1, 0, 1, 0]
    with pytest.raises(ValueError, match="at least 2 distinct"):
        select_classes(x, y, [4, 4])
    with pytest.raises(ValueError, match="no example has a label in"):
        select_classes(x, y, [5, 6])
    with pytest.raises(ValueError, match=r"no example has label \[15\]"):
        select_classes(x, y, [0, 15])  # a class of one, relabelled, came back before
    with pytest.raises(TypeError, match="1-D integer tensor"):
        select_classes(x, y.float(), [0, 4])
