"""BatchStream invariants: coverage, determinism, sharding, shapes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from psgan_fast.data import BatchStream, IdxFormatError, to_float


def make(n=103, h=3, w=2, **kw):
    images = (np.arange(n, dtype=np.int64)[:, None, None] % 256 * np.ones((1, h, w), np.int64)).astype(np.uint8)
    labels = np.arange(n, dtype=np.int64)
    kw.setdefault("batch_size", 8)
    return BatchStream(images, labels, **kw), images


def ids(stream, epoch=0):
    stream.set_epoch(epoch)
    return [y.tolist() for _, y in stream]


def test_every_item_exactly_once_per_epoch_without_drop_last():
    s, _ = make(drop_last=False)
    batches = ids(s)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(103))
    assert len(batches) == len(s) == 13
    assert len(batches[-1]) == 103 - 12 * 8


def test_drop_last_yields_only_full_batches():
    s, _ = make(drop_last=True)
    batches = ids(s)
    assert len(batches) == len(s) == 12
    assert all(len(b) == 8 for b in batches)
    assert len(set(i for b in batches for i in b)) == 96


def test_same_seed_and_epoch_same_order_other_epoch_other_order():
    a, _ = make(seed=5)
    b, _ = make(seed=5)
    assert ids(a, 3) == ids(b, 3)
    assert ids(a, 3) != ids(a, 4)
    c, _ = make(seed=6)
    assert ids(a, 3) != ids(c, 3)
    plain, _ = make(shuffle=False, drop_last=False)
    assert [i for bt in ids(plain) for i in bt] == list(range(103))


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_rank_shards_are_disjoint_and_cover_the_epoch(world_size):
    shards = []
    for r in range(world_size):
        s, _ = make(drop_last=False, rank=r, world_size=world_size, seed=1)
        shards.append([i for b in ids(s, 2) for i in b])
    flat = [i for sh in shards for i in sh]
    assert sorted(flat) == list(range(103))


def test_sharded_batches_match_the_global_batch():
    ws, b = 2, 8
    g, _ = make(n=200, batch_size=ws * b, seed=9)
    glob = ids(g, 1)
    shards = [ids(make(n=200, batch_size=b, seed=9, rank=r, world_size=ws)[0], 1) for r in range(ws)]
    assert len(glob) == len(shards[0]) == len(shards[1])
    for t, batch in enumerate(glob):
        assert sorted(batch) == sorted(shards[0][t] + shards[1][t])


def test_images_match_labels_and_have_the_right_layout():
    s, images = make()
    x, y = next(iter(s))
    assert x.dtype == torch.uint8 and x.shape == (8, 1, 3, 2)
    assert y.dtype == torch.int64 and y.shape == (8,)
    np.testing.assert_array_equal(x[:, 0].numpy(), images[y.numpy()])


def test_iter_epoch_from_a_batch_is_the_tail_of_the_epoch():
    s, _ = make(seed=4)
    full = [y.tolist() for _, y in s.iter_epoch(7)]
    tail = [y.tolist() for _, y in s.iter_epoch(7, start_batch=5)]
    assert tail == full[5:]


def test_count_mismatch_and_bad_arguments_are_clear_errors():
    with pytest.raises(IdxFormatError, match="label/image count mismatch"):
        BatchStream(np.zeros((10, 2, 2), np.uint8), np.zeros(9, np.int64), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        BatchStream(np.zeros((10, 2, 2), np.uint8), batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        BatchStream(np.zeros((10, 2, 2), np.uint8), batch_size=2, rank=2, world_size=2)
    with pytest.raises(TypeError, match="uint8"):
        BatchStream(np.zeros((10, 2, 2), np.float32), batch_size=2)


def test_unlabelled_stream_yields_minus_one_labels():
    s = BatchStream(np.zeros((10, 2, 2), np.uint8), batch_size=5)
    _, y = next(iter(s))
    assert y.tolist() == [-1] * 5


def test_real_mnist_stream_from_paths(mnist_train):
    s = BatchStream(*mnist_train, batch_size=64, seed=0)
    assert len(s) == 60000 // 64
    x, y = next(iter(s))
    assert x.shape == (64, 1, 28, 28)
    assert 0 <= int(y.min()) and int(y.max()) <= 9
    f = to_float(x)
    assert f.dtype == torch.float32 and float(f.min()) >= -1 and float(f.max()) <= 1
    assert torch.allclose(f, x.float() / 127.5 - 1, atol=1e-6)


def test_abandoned_iterators_do_not_leak_or_block():
    s, _ = make(n=1000, batch_size=4, prefetch=1)
    for _ in range(50):
        it = iter(s)
        next(it)
        del it
    assert len(ids(s)) == 250


def test_sizes_a_caller_controls_are_bounded_with_a_value_error():
    """Issue #18: prefetch=10**9 made Rust allocate a 64 GB channel and abort
    the whole process ("memory allocation of 64000000000 bytes failed").
    Run in a child so that an abort fails this test instead of the session."""
    code = textwrap.dedent("""
        import numpy as np
        from psgan_fast import _core
        from psgan_fast.data import BatchStream
        x = np.zeros((10, 2, 2), np.uint8)
        cases = {
            "prefetch": lambda: list(BatchStream(x, batch_size=2, prefetch=10**9)),
            "core prefetch": lambda: list(_core.BatchStreamCore(x, [1, 2, 2], batch_size=2, prefetch=10**9).epoch(0)),
            "item shape": lambda: _core.BatchStreamCore(np.zeros((1, 0), np.uint8), [2**40, 2**40, 2**40],
                                                        batch_size=1),
        }
        for name, case in cases.items():
            try:
                case()
                print(name, "accepted")
            except ValueError as e:
                print(name, "ValueError:", e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert [line.split(" ValueError")[0] for line in lines if "ValueError: " in line] == \
        ["prefetch", "core prefetch", "item shape"], r.stdout
    assert "prefetch must be" in lines[0] and "overflow" in lines[2], r.stdout
