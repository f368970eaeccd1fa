from __future__ import annotations

import numpy as np

from training.data import BatchDataset, BucketBatches, Encoded, split


def test_bucket_batches_cover_every_example_once_and_are_deterministic():
    lengths = np.random.default_rng(0).integers(5, 100, size=1000)
    sampler = BucketBatches(lengths, batch_size=32, bucket_size=4, seed=1)
    a, b = sampler.batches(0), sampler.batches(0)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    flat = np.concatenate(a)
    assert sorted(flat.tolist()) == list(range(1000))
    assert not all((x == y).all() for x, y in zip(a, sampler.batches(1), strict=False))


def test_buckets_reduce_padding():
    lengths = np.random.default_rng(0).integers(5, 128, size=4096)
    bucketed = BucketBatches(lengths, 32, 50, seed=0).batches(0)
    random_order = np.random.default_rng(0).permutation(4096)
    plain = [random_order[i : i + 32] for i in range(0, 4096, 32)]
    pad = lambda bs: sum(len(b) * lengths[b].max() for b in bs)  # noqa: E731
    assert pad(bucketed) < 0.75 * pad(plain)


def test_ranks_get_disjoint_equal_shards():
    lengths = np.arange(1000) % 50 + 1
    shards = [BucketBatches(lengths, 10, 5, seed=3, rank=r, world=2).batches(0) for r in range(2)]
    assert len(shards[0]) == len(shards[1])
    assert not set(np.concatenate(shards[0])) & set(np.concatenate(shards[1]))


def test_dynamic_padding_and_split():
    data = Encoded(
        [np.array([1, 2, 3], np.int32), np.array([4], np.int32)],
        np.zeros((2, 1), np.float32),
        np.array([0, 1], np.float32),
    )
    item = BatchDataset(data, [np.array([0, 1])], pad_id=0)[0]
    assert item["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert item["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    tr, ev = split(100, 0.2, 0)
    assert len(ev) == 20
    assert not set(tr) & set(ev)
