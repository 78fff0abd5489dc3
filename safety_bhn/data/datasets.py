"""Load MNIST and Fashion-MNIST from a data dir, download them, or use the embedded MNIST copy."""

from __future__ import annotations

import enum
import hashlib
import http.client
import logging
import operator
import os
import shutil
import urllib.request
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .._choices import did_you_mean, parse_choice
from .._io import create_temp_beside, fsync_folder
from .idx import DataError, idx_magic, parse_idx, read_idx

__all__ = [
    "ENV_VAR",
    "DatasetName",
    "download",
    "embedded_mnist",
    "load_dataset",
    "resolve_data_dir",
]

logger = logging.getLogger(__name__)

ENV_VAR = "SAFETY_BHN_DATA"
"""Environment variable naming the data dir when ``data_dir`` is not passed."""


class DatasetName(str, enum.Enum):
    """The data sets :func:`load_dataset` knows.

    Example:
        >>> DatasetName("fashion_mnist") is DatasetName.FASHION_MNIST
        True
    """

    MNIST = "mnist"
    FASHION_MNIST = "fashion_mnist"


_SPLITS = ("train", "test", "extra")
_FOLDERS = {DatasetName.MNIST: "mnist", DatasetName.FASHION_MNIST: "fashion-mnist"}
_EXTRA_FOLDER = "mnist-extra5k"
_IMAGE_MAGIC = 0x00000803
_LABEL_MAGIC = 0x00000801
_IMAGE_SIZE = (28, 28)
_NUM_CLASSES = 10

_MIRRORS: dict[DatasetName, tuple[str, ...]] = {
    DatasetName.MNIST: (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    DatasetName.FASHION_MNIST: ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

# md5 of the official .gz files, keyed by their path inside the data dir (torchvision's values).
_MD5: dict[str, str] = {
    "mnist/train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "mnist/train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "mnist/t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "mnist/t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "fashion-mnist/train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "fashion-mnist/train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "fashion-mnist/t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "fashion-mnist/t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

# sha256 of the files <stem>.gz in safety_bhn/data/embedded/ (same bytes as shared/data/mnist/).
_EMBEDDED_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "66f9ac540966baaec46dc847ef780170f83ff188761931c0115f3f60497c4797",
    "train-labels-idx1-ubyte": "0bd1c3ebe2126da16fe15ba87422f75d0a4b37066970e0e29aa16577a2857965",
    "t10k-images-idx3-ubyte": "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b",
    "t10k-labels-idx1-ubyte": "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c",
}

_FETCH_TIMEOUT_S = 60.0


def _coerce_name(name: DatasetName | str) -> DatasetName:
    return parse_choice(name, DatasetName, "dataset name")


def _coerce_split(split: str, allowed: Sequence[str], context: str) -> str:
    if split in allowed:
        return split
    hint = did_you_mean(split, list(allowed))
    raise ValueError(
        f"unknown split {split!r} for {context}; expected one of "
        f"{', '.join(map(repr, allowed))}{hint}"
    )


def _layout(name: DatasetName, split: str) -> tuple[str, str, str]:
    """Return (folder, images file stem, labels file stem) inside the data dir."""
    if split == "extra":
        return _EXTRA_FOLDER, "extra-images-idx3-ubyte", "extra-labels-idx1-ubyte"
    prefix = "train" if split == "train" else "t10k"
    return _FOLDERS[name], f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _default_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "safety_bhn"


DATA_DIR_SOURCE = "the data_dir argument"


def _resolve(data_dir: str | os.PathLike[str] | None) -> tuple[Path, str]:
    if data_dir is not None:
        if not str(data_dir).strip():
            raise ValueError(
                "data_dir is an empty string; pass a folder (for this folder, '.'), or None for "
                f"${ENV_VAR} or the cache dir"
            )
        return Path(data_dir).expanduser().absolute(), DATA_DIR_SOURCE
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser().absolute(), f"the {ENV_VAR} environment variable"
    return _default_cache_dir(), "the default cache dir ($XDG_CACHE_HOME or ~/.cache)"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the data dir: ``data_dir`` if given, else ``$SAFETY_BHN_DATA``, else the cache dir.

    The cache dir is ``$XDG_CACHE_HOME/safety_bhn``, or ``~/.cache/safety_bhn`` when
    ``XDG_CACHE_HOME`` is unset. The folder is not created.

    Example:
        >>> resolve_data_dir("~/datasets").name
        'datasets'
    """
    return _resolve(data_dir)[0]


def _check_pair(images: np.ndarray, labels: np.ndarray, img_src: str, lbl_src: str) -> None:
    fix = "replace the file with a good copy (see safety_bhn.data.download)"
    for arr, src, want, what in (
        (images, img_src, _IMAGE_MAGIC, "an image file (uint8, 3 dimensions)"),
        (labels, lbl_src, _LABEL_MAGIC, "a label file (uint8, 1 dimension)"),
    ):
        got = idx_magic(arr)
        if got != want:
            raise DataError(
                f"{src}: wrong magic number {got} (0x{got:08x}); expected {want} (0x{want:08x}) "
                f"for {what}; {fix}"
            )
    if images.shape[1:] != _IMAGE_SIZE:
        raise DataError(
            f"{img_src}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28; {fix}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"count mismatch: {img_src} holds {len(images)} images but {lbl_src} holds "
            f"{len(labels)} labels; the two files do not belong together, {fix}"
        )
    if len(images) == 0:  # else a later "val_size must lie in [0, 0)" names no file
        raise DataError(f"{img_src} holds no images; {fix}")
    bad = np.flatnonzero(labels >= _NUM_CLASSES)
    if bad.size:
        raise DataError(
            f"{lbl_src}: {bad.size} labels outside 0..9 (first at index {bad[0]}: "
            f"{labels[bad[0]]}); {fix}"
        )


def _to_tensors(
    images: np.ndarray, labels: np.ndarray, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(images).unsqueeze(1)
    if normalize:
        x = x.to(torch.float32).div_(255.0)
    return x, torch.from_numpy(labels.astype(np.int64))


def _missing_message(
    name: DatasetName,
    split: str,
    root: Path,
    source: str,
    candidates: list[tuple[Path, bool]],
) -> str:
    where = f"data dir {root} (from {source})"
    if root.is_file():
        where += "; that is a file, not a folder"
    elif not root.is_dir():
        where += "; that folder does not exist"
    tried = "\n".join(f"  {p}  ({'found' if ok else 'missing'})" for p, ok in candidates)
    folder, img_stem, _ = _layout(name, split)
    fixes = [
        f"pass data_dir= (--data-dir on the command line) a folder laid out as "
        f"<dir>/{folder}/{img_stem}.gz (raw files without .gz work too)",
    ]
    if source != DATA_DIR_SOURCE:  # a data_dir given overrides the variable
        fixes.append(f"set {ENV_VAR}=<dir>")
    if split == "extra":
        fixes.append(
            "the 'extra' split cannot be downloaded: it is the mnist-extra5k folder of the "
            "project's shared data (shared/data/mnist-extra5k); point data_dir at shared/data"
        )
    else:
        fixes.append(
            f"run safety_bhn.data.download({name.value!r}, {str(root)!r}) to fetch the official "
            "files (needs internet)"
        )
    if name is DatasetName.MNIST and split != "extra":
        fixes.append(
            f"offline: use safety_bhn.data.embedded_mnist({split!r}), the copy shipped with the "
            "package (5000 train / 10000 test images)"
        )
    fix_text = "\n".join(f"  - {f}" for f in fixes)
    return (
        f"{name.value} {split!r} split not found in {where}.\n"
        f"Looked for:\n{tried}\nHow to fix:\n{fix_text}"
    )


def load_dataset(
    name: DatasetName | str,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a split of MNIST or Fashion-MNIST from IDX files in the data dir.

    ``name`` is ``"mnist"`` or ``"fashion_mnist"``; ``split`` is ``"train"``, ``"test"`` or
    (MNIST only) ``"extra"``. The data dir is chosen by :func:`resolve_data_dir` and laid out
    like the project's shared data folder: ``<dir>/mnist/train-images-idx3-ubyte.gz``,
    ``<dir>/fashion-mnist/...``, ``<dir>/mnist-extra5k/extra-images-idx3-ubyte.gz``; files
    without ``.gz`` are read too. Returns ``x`` of shape (N, 1, 28, 28), float32 in [0, 1]
    (uint8 if ``normalize=False``), and int64 labels ``y`` of shape (N,). Raises
    :class:`DataError` if the files are missing or corrupt.

    Example:
        >>> x, y = load_dataset("mnist", "test", "../shared/data")  # doctest: +SKIP
        >>> x.shape, y[:5].tolist()  # doctest: +SKIP
        (torch.Size([10000, 1, 28, 28]), [7, 2, 1, 0, 4])
    """
    ds = _coerce_name(name)
    if split == "extra" and ds is not DatasetName.MNIST:
        raise ValueError(f"split 'extra' exists only for 'mnist', not for {ds.value!r}")
    split = _coerce_split(split, _SPLITS if ds is DatasetName.MNIST else _SPLITS[:2], ds.value)
    root, source = _resolve(data_dir)
    folder, img_stem, lbl_stem = _layout(ds, split)
    candidates: list[tuple[Path, bool]] = []
    found: list[Path] = []
    for stem in (img_stem, lbl_stem):
        for path in (root / folder / f"{stem}.gz", root / folder / stem):
            ok = path.is_file()
            candidates.append((path, ok))
            if ok:
                found.append(path)
                break
    if len(found) < 2:
        raise DataError(_missing_message(ds, split, root, source, candidates))
    img_path, lbl_path = found
    images, labels = read_idx(img_path), read_idx(lbl_path)
    _check_pair(images, labels, str(img_path), str(lbl_path))
    return _to_tensors(images, labels, normalize)


def _embedded_bytes(stem: str) -> tuple[bytes, str]:
    resource = resources.files(__package__).joinpath("embedded", f"{stem}.gz")
    try:
        data = resource.read_bytes()
    except OSError as exc:
        raise DataError(
            f"embedded MNIST file {resource} is missing ({exc}); the package installation is "
            "incomplete: reinstall safety-bhn, or use load_dataset('mnist', data_dir=...)"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    expected = _EMBEDDED_SHA256[stem]
    if digest != expected:
        raise DataError(
            f"embedded MNIST file {resource} is corrupt: sha256 {digest}, expected {expected}; "
            "reinstall safety-bhn, or use load_dataset('mnist', data_dir=...)"
        )
    return data, str(resource)


def embedded_mnist(
    split: str = "train", *, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the compact MNIST copy shipped with the package; works offline.

    ``split="train"`` gives a class-balanced 5000-image subset of the MNIST training set (500
    per class, grouped by class); ``split="test"`` gives the full 10000-image MNIST test set.
    The files' sha256 is checked on every load (:class:`DataError` if corrupt). Shapes and
    dtypes are as in :func:`load_dataset`.

    Example:
        >>> x, y = embedded_mnist("test")
        >>> tuple(x.shape), y[:3].tolist()
        ((10000, 1, 28, 28), [7, 2, 1])
    """
    split = _coerce_split(split, ("train", "test"), "the embedded MNIST copy")
    _, img_stem, lbl_stem = _layout(DatasetName.MNIST, split)
    img_data, img_src = _embedded_bytes(img_stem)
    lbl_data, lbl_src = _embedded_bytes(lbl_stem)
    images, labels = parse_idx(img_data, img_src), parse_idx(lbl_data, lbl_src)
    _check_pair(images, labels, img_src, lbl_src)
    return _to_tensors(images, labels, normalize)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` into the file ``dest`` (tests replace this to stay offline)."""
    request = urllib.request.Request(url, headers={"User-Agent": "safety-bhn (urllib)"})
    with urllib.request.urlopen(request, timeout=_FETCH_TIMEOUT_S) as response:
        with dest.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())  # on disk before it is renamed into place


def _download_file(name: DatasetName, folder: Path, rel_path: str) -> None:
    file_name = rel_path.rsplit("/", 1)[-1]
    expected = _MD5[rel_path]
    dest = folder / file_name
    if dest.is_file():
        if _md5(dest) == expected:
            logger.info("%s already present with the right checksum", dest)
            return
        logger.info("%s has a different checksum; downloading the official file", dest)
    errors: list[str] = []
    for mirror in _MIRRORS[name]:
        url = mirror + file_name
        try:  # a local failure is no mirror's fault: named as such, the other mirrors untried
            fd, tmp = create_temp_beside(dest, ".part")  # permissions as open() would give
            os.close(fd)
        except OSError as exc:
            raise DataError(
                f"cannot write into {folder} ({exc}); choose a writable folder"
            ) from None
        try:
            logger.info("downloading %s", url)
            _fetch(url, tmp)
            got = _md5(tmp)
            if got == expected:
                try:
                    os.replace(tmp, dest)
                    fsync_folder(folder)
                except OSError as exc:
                    raise DataError(
                        f"downloaded {rel_path} with the right checksum, but could not move it "
                        f"to {dest} ({exc}); free that path and retry"
                    ) from None
                return
            errors.append(f"{url}: md5 mismatch, got {got}, expected {expected}")
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    detail = "\n".join(f"  {e}" for e in errors)
    advice = (
        "A mirror served a file whose checksum differs from the official one (a changed or "
        "corrupted mirror, or a proxy page); retry later"
        if all("md5 mismatch" in e for e in errors)
        else "Check the internet connection and retry"
    )
    raise DataError(
        f"could not download {rel_path} into {folder}; every mirror failed:\n{detail}\n"
        f"Nothing was written to {dest}. {advice}, or copy the official file there by hand"
        + ("; offline, safety_bhn.data.embedded_mnist() works" if name is DatasetName.MNIST else "")
    )


def download(
    name: DatasetName | str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    splits: Iterable[str] = ("train", "test"),
) -> Path:
    """Download the official gzip IDX files of a data set into the data dir; return the dir.

    MNIST comes from ``ossci-datasets.s3.amazonaws.com`` (``yann.lecun.com`` as fallback),
    Fashion-MNIST from Zalando's S3 mirror. Each file's md5 is checked before it is moved into
    place atomically; files already present with the right md5 are skipped. Raises
    :class:`DataError` if no mirror delivers a file with the right checksum.

    Example:
        >>> root = download("mnist")  # doctest: +SKIP
        >>> x, y = load_dataset("mnist", "train", root)  # doctest: +SKIP
        >>> len(x)  # doctest: +SKIP
        60000
    """
    ds = _coerce_name(name)
    wanted = (splits,) if isinstance(splits, str) else tuple(splits)
    for split in wanted:
        _coerce_split(split, ("train", "test"), f"download of {ds.value} (official files)")
    root = resolve_data_dir(data_dir)
    folder_name = _FOLDERS[ds]
    folder = root / folder_name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create {folder} ({exc}); pass a writable data_dir= or set {ENV_VAR}"
        ) from exc
    for split in dict.fromkeys(wanted):
        _, img_stem, lbl_stem = _layout(ds, split)
        for stem in (img_stem, lbl_stem):
            _download_file(ds, folder, f"{folder_name}/{stem}.gz")
    return root


def class_list(classes: Iterable[int]) -> list[int]:
    """``classes`` as a list of plain ints (NumPy and torch integers accepted), checked to be
    at least 2 distinct non-negative labels.

    >>> class_list(np.arange(3))
    [0, 1, 2]
    """
    if isinstance(classes, str | bytes):  # "12" read as [1, 2] before, and named so
        raise ValueError(
            f"classes must be a list of integer labels such as [0, 1], got {classes!r}"
        )
    given = list(classes)
    wanted = []
    for c in given:
        try:
            wanted.append(-1 if isinstance(c, bool) else operator.index(c))
        except TypeError:
            wanted.append(-1)
    if len(wanted) < 2 or len(set(wanted)) != len(wanted) or min(wanted) < 0:
        shown = [str(c.item() if hasattr(c, "item") else c) for c in given]
        raise ValueError(
            f"classes must be at least 2 distinct non-negative integer labels, got "
            f"[{', '.join(shown)}]"
        )
    return wanted


def select_classes(
    x: torch.Tensor, y: torch.Tensor, classes: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples whose label is one of ``classes``, relabelled ``0..K-1`` in that order,
    so that a model with ``n_classes=K`` can learn them (e.g. digits 0-4 only, with 5-9 kept
    back as novel classes for OOD detection).

    >>> x, y = torch.rand(5, 2), torch.tensor([3, 0, 7, 3, 1])
    >>> select_classes(x, y, [3, 7])[1].tolist()
    [0, 1, 0]
    """
    if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dim() != 1:
        raise TypeError("y must be a 1-D integer tensor of class labels")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
    wanted = class_list(classes)
    known = torch.as_tensor(wanted, dtype=torch.long)
    y = y.long()
    mask = torch.isin(y, known)
    if not mask.any():
        raise ValueError(f"no example has a label in {wanted}; the labels present are "
                         f"{y.unique().tolist()}")  # fmt: skip
    absent = [c for c in wanted if not (y == c).any()]
    if absent:  # a class with no example would leave an output that nothing trains
        raise ValueError(f"no example has label {absent}; the labels present are "
                         f"{y.unique().tolist()}")  # fmt: skip
    relabel = torch.full((max(int(y.max()), max(wanted)) + 1,), -1, dtype=torch.long)
    relabel[known] = torch.arange(len(wanted))
    return x[mask], relabel[y[mask]]
