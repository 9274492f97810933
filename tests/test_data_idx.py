"""IDX parsing: real MNIST, every malformed-input class, random bytes."""

from __future__ import annotations

import gzip
import struct
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psgan_fast.data import IdxFormatError, read_idx
from psgan_fast import _core


def idx_bytes(dims, data=None, type_byte=0x08):
    n = int(np.prod(dims)) if dims else 0
    if data is None:
        data = bytes(i % 251 for i in range(n))
    return bytes([0, 0, type_byte, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def write(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    return p


def test_real_mnist_shapes_and_label_counts(mnist_train, mnist_test):
    images, labels = mnist_train
    x, y = read_idx(images), read_idx(labels)
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,)
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert read_idx(mnist_test[0]).shape == (10000, 28, 28)
    assert read_idx(mnist_test[1]).shape == (10000,)


def test_raw_and_gzip_read_the_same(tmp_path):
    raw = idx_bytes([3, 4, 5])
    a = read_idx(write(tmp_path, "a.idx", raw))
    b = read_idx(write(tmp_path, "b.idx", gzip.compress(raw)))
    assert a.shape == (3, 4, 5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a.ravel(), np.frombuffer(raw[4 + 12:], np.uint8))


MALFORMED = {
    "empty file": (b"", "empty"),
    "truncated header": (b"\x00\x00\x08", "truncated header"),
    "truncated dims": (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header"),
    "truncated data": (idx_bytes([10, 10], bytes(50)), "truncated data"),
    "wrong magic": (b"\x01\x02" + idx_bytes([2])[2:], "magic"),
    "wrong type byte": (idx_bytes([2], type_byte=0x0D), "type byte"),
    "zero dimensions": (b"\x00\x00\x08\x00", "dimensions"),
    "five dimensions": (idx_bytes([1, 1, 1, 1, 1]), "dimensions"),
    "overflowing dimensions": (b"\x00\x00\x08\x04" + b"\xff\xff\xff\xff" * 4, "overflow"),
    "dimensions exceed the file": (idx_bytes([60000, 28, 28], bytes(100)), "truncated data"),
    "trailing data": (idx_bytes([2], b"\x01\x02\x03"), "trailing data"),
    "corrupt gzip": (gzip.compress(idx_bytes([100]))[:-12] + b"\x00" * 4, "gzip"),
    "gzip of truncated data": (gzip.compress(idx_bytes([100], bytes(10))), "truncated data"),
    "forged gzip header": (gzip.compress(idx_bytes([60000, 60000, 60000], bytes(3))), "truncated data"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_gives_a_clear_idx_format_error(tmp_path, case):
    content, needle = MALFORMED[case]
    path = write(tmp_path, "bad-file.idx", content)
    t0 = time.perf_counter()
    with pytest.raises(IdxFormatError) as info:
        read_idx(path)
    assert time.perf_counter() - t0 < 0.5
    msg = str(info.value)
    assert "bad-file.idx" in msg, msg
    assert needle in msg, msg
    assert isinstance(info.value, ValueError)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.idx"):
        read_idx(tmp_path / "nope.idx")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_parser(data):
    for blob in (data, gzip.compress(data), b"\x00\x00\x08" + data[:1] + data[1:]):
        try:
            arr = _core.parse_idx(blob)
        except IdxFormatError:
            continue
        assert arr.dtype == np.uint8
