"""DeviceLoader: exact coverage per epoch, sharding across ranks, seeding, normalisation."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.data import ImageTensorDataset
from cnnlab.data import transforms as T
from cnnlab.data.loader import DeviceLoader, epoch_indices, make_loader


def indexed_dataset(n: int) -> ImageTensorDataset:
    """Image i holds i in its two pixels (base 256), so batches reveal which samples they hold."""
    i = torch.arange(n)
    images = torch.stack([i // 256, i % 256], dim=1).to(torch.uint8).view(n, 1, 1, 2)
    return ImageTensorDataset(images, i % 10, [str(k) for k in range(10)])


def ids(x: torch.Tensor) -> list[int]:
    raw = (x * 255).round().long().view(len(x), 2)  # mean 0, std 1 -> pixels / 255
    return (raw[:, 0] * 256 + raw[:, 1]).tolist()


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_every_sample_once_per_epoch_across_ranks(world_size):
    ds = indexed_dataset(301)
    for epoch in range(2):
        seen = []
        for rank in range(world_size):
            loader = DeviceLoader(ds, 32, shuffle=True, mean=[0.0], std=[1.0], seed=7,
                                  rank=rank, world_size=world_size)
            loader.set_epoch(epoch)
            batches = [ids(x) for x, _ in loader]
            assert len(batches) == len(loader)
            assert sum(map(len, batches)) == loader.num_samples
            seen += [i for b in batches for i in b]
        assert sorted(seen) == list(range(301))


def test_order_depends_on_seed_and_epoch_only():
    ds = indexed_dataset(100)
    a = DeviceLoader(ds, 10, shuffle=True, mean=[0.0], std=[1.0], seed=1)
    b = DeviceLoader(ds, 10, shuffle=True, mean=[0.0], std=[1.0], seed=1)
    first = [ids(x) for x, _ in a]
    assert first == [ids(x) for x, _ in b]
    a.set_epoch(1)
    assert first != [ids(x) for x, _ in a]
    plain = DeviceLoader(ds, 10, shuffle=False, mean=[0.0], std=[1.0])
    assert [i for x, _ in plain for i in ids(x)] == list(range(100))


def test_labels_follow_images_and_drop_last():
    ds = indexed_dataset(25)
    loader = DeviceLoader(ds, 10, shuffle=True, mean=[0.0], std=[1.0], drop_last=True)
    assert len(loader) == 2 and loader.num_samples == 20
    for x, y in loader:
        assert y.dtype == torch.int64 and [i % 10 for i in ids(x)] == y.tolist()


def test_transform_and_normalisation_on_batches():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 8, 8), generator=g, dtype=torch.uint8)
    ds = ImageTensorDataset(images, torch.zeros(40, dtype=torch.int64), ["a"])
    loader = DeviceLoader(
        ds, 16, shuffle=False, seed=3,
        train_transform=lambda x, gen: T.random_flip(T.random_crop(x, 8, 2, generator=gen),
                                                     generator=gen),
    )
    runs = [torch.cat([x for x, _ in loader]) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])  # the augmentation is seeded too
    plain = torch.cat([x for x, _ in DeviceLoader(ds, 16, shuffle=False)])
    assert not torch.equal(runs[0], plain)  # ... and was applied
    mean = torch.tensor(ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.std).view(1, 3, 1, 1)
    assert torch.allclose(plain, (images / 255 - mean) / std, atol=1e-5)
    assert isinstance(make_loader(ds, 8, shuffle=False), DeviceLoader)


def test_bad_rank():
    with pytest.raises(ValueError, match="rank < world_size"):
        epoch_indices(10, shuffle=False, seed=0, epoch=0, rank=2, world_size=2)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), world_size=st.integers(1, 5), batch_size=st.integers(1, 16),
       seed=st.integers(0, 3), epoch=st.integers(0, 3))
def test_sharding_covers_each_sample_once(n, world_size, batch_size, seed, epoch):
    ds = indexed_dataset(n)
    seen, counts = [], set()
    for rank in range(world_size):
        loader = DeviceLoader(ds, batch_size, shuffle=True, mean=[0.0], std=[1.0], seed=seed,
                              rank=rank, world_size=world_size)
        loader.set_epoch(epoch)
        batches = [ids(x) for x, _ in loader]
        assert len(batches) == len(loader)
        assert all(len(b) <= batch_size for b in batches)
        counts.add(len(batches))
        seen += [i for b in batches for i in b]
    assert len(counts) == 1  # every rank takes part in every step
    # each sample once; only a remainder too small to give every rank one image is left out
    rest = n % (batch_size * world_size)
    assert len(seen) == len(set(seen)) == n - (rest if rest < world_size else 0)


def _rank_batches(ds, batch, world_size, *, drop_last, epoch=0):
    out = []
    for rank in range(world_size):
        loader = DeviceLoader(ds, batch, shuffle=True, mean=[0.0], std=[1.0], seed=3,
                              drop_last=drop_last, rank=rank, world_size=world_size)
        loader.set_epoch(epoch)
        batches = [ids(x) for x, _ in loader]
        assert len(batches) == len(loader)
        assert sum(map(len, batches)) == loader.num_samples
        out.append(batches)
    return out


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [96, 103, 97])
def test_ranks_together_draw_one_process_global_batches(world_size, n):
    """Batch b of all ranks (batch 8 each) is batch b of one process with batch 8 x world
    size; every rank has as many batches (DDP needs every rank in every step). 103 and 97
    leave remainders (n mod 8W) that are smaller than a batch."""
    ds = indexed_dataset(n)
    ranks = _rank_batches(ds, 8, world_size, drop_last=False)
    assert len({len(b) for b in ranks}) == 1
    whole = _rank_batches(ds, 8 * world_size, 1, drop_last=False)[0]
    glob = 8 * world_size
    rest = n % glob
    # the remainder is a last, smaller step unless it cannot give every rank an image
    expected_steps = n // glob + (rest >= world_size)
    assert len(ranks[0]) == expected_steps
    for b in range(expected_steps):
        together = sorted(i for r in range(world_size) for i in ranks[r][b])
        assert together == sorted(whole[b])
        sizes = [len(ranks[r][b]) for r in range(world_size)]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    seen = sorted(i for r in ranks for b in r for i in b)
    assert len(seen) == len(set(seen))  # nothing drawn twice
    left_out = n - len(seen)
    assert left_out == (rest if rest < world_size else 0)


def test_remainder_smaller_than_world_size_is_left_out():
    # 97 = 3 x 32 + 1: one image cannot be split over 4 ranks; it (a different one each
    # epoch) is left out, the other 96 are each seen once.
    ds = indexed_dataset(97)
    missing = []
    for epoch in range(3):
        ranks = _rank_batches(ds, 8, 4, drop_last=False, epoch=epoch)
        seen = {i for r in ranks for b in r for i in b}
        assert len(seen) == 96
        missing.append(sorted(set(range(97)) - seen))
    assert len({m[0] for m in missing}) > 1


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_drop_last_leaves_out_the_partial_global_batch(world_size):
    ds = indexed_dataset(103)
    ranks = _rank_batches(ds, 8, world_size, drop_last=True)
    glob = 8 * world_size
    assert all(len(r) == 103 // glob for r in ranks)
    assert all(len(b) == 8 for r in ranks for b in r)
    seen = [i for r in ranks for b in r for i in b]
    assert len(seen) == len(set(seen)) == 103 // glob * glob
