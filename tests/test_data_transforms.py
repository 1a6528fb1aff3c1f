"""Batched transforms, each checked against a per-image numpy derivation."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.data import transforms as T


def batch(n=16, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def windows(padded: np.ndarray, size: int) -> list[np.ndarray]:
    h, w = padded.shape[1:]
    return [padded[:, i : i + size, j : j + size]
            for i in range(h - size + 1) for j in range(w - size + 1)]


@pytest.mark.parametrize("mode,np_mode", [("zero", "constant"), ("reflect", "reflect")])
def test_random_crop_takes_a_window_of_the_padded_image(mode, np_mode):
    x = batch(n=64)
    out = T.random_crop(x, 8, padding=2, mode=mode, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    seen = set()
    for image, crop in zip(x.numpy(), out.numpy(), strict=True):
        padded = np.pad(image, ((0, 0), (2, 2), (2, 2)), mode=np_mode)
        hits = [k for k, win in enumerate(windows(padded, 8)) if np.array_equal(win, crop)]
        assert hits, "output is not a window of the padded image"
        seen.add(hits[0])
    assert len(seen) > 10  # offsets really vary over the 25 possible ones


def test_random_crop_is_seeded():
    x = batch()
    a = T.random_crop(x, 6, 1, generator=torch.Generator().manual_seed(5))
    b = T.random_crop(x, 6, 1, generator=torch.Generator().manual_seed(5))
    c = T.random_crop(x, 6, 1, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="'zero' or 'reflect'"):
        T.random_crop(x, 6, 1, mode="edge")
    with pytest.raises(ValueError, match="larger than the padded image"):
        T.random_crop(x, 11, 1)


def test_random_flip_mirrors_some():
    x = batch(n=200)
    out = T.random_flip(x, generator=torch.Generator().manual_seed(0))
    pairs = list(zip(out.numpy(), x.numpy(), strict=True))
    flipped = [np.array_equal(o, i[:, :, ::-1]) for o, i in pairs]
    same = [np.array_equal(o, i) for o, i in pairs]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert 60 < sum(flipped) < 140
    assert torch.equal(T.random_flip(x, p=0.0), x)
    assert torch.equal(T.random_flip(x, p=1.0), x.flip(3))


def test_normalize_matches_formula():
    x = batch()
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    out = T.normalize(x, mean, std)
    expected = (x.numpy() / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(T.normalize(x.float() / 255, mean, std).numpy(), expected,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="3 channels but 1 means"):
        T.normalize(x, [0.5], [0.2])


def test_center_and_ten_crop():
    x = batch(n=2, h=7, w=9)
    assert torch.equal(T.center_crop(x, 3), x[:, :, 2:5, 3:6])
    out = T.ten_crop(x, 3).view(2, 10, 3, 3, 3)
    a = x.numpy()
    expected = [a[:, :, :3, :3], a[:, :, :3, 6:], a[:, :, 4:, :3], a[:, :, 4:, 6:],
                a[:, :, 2:5, 3:6]]
    expected += [e[..., ::-1] for e in expected]
    for k, e in enumerate(expected):
        assert np.array_equal(out[:, k].numpy(), e), k
    with pytest.raises(ValueError, match="larger than the image"):
        T.ten_crop(x, 8)


def test_random_resized_crop_identity_and_determinism():
    x = batch(h=16, w=16)
    # the whole image at its own size is the identity (bilinear sampling at pixel centres)
    same = T.random_resized_crop(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.equal(same, x)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a, b = T.random_resized_crop(x, 8, generator=g()), T.random_resized_crop(x, 8, generator=g())
    assert a.shape == (16, 3, 8, 8) and a.dtype == torch.uint8 and torch.equal(a, b)
    # impossible ratios fall back to the centre crop with the ratio clamped: 16 wide, 16/2 high
    image = torch.arange(16, dtype=torch.uint8).repeat(1, 1, 16, 1).mul(10)  # value = 10 * column
    rows = torch.arange(16, dtype=torch.uint8).view(1, 1, 16, 1).expand(1, 1, 16, 16)
    out = T.random_resized_crop(rows * 10, (8, 16), scale=(0.9, 1.0), ratio=(2.0, 2.0))
    assert torch.equal(out[0, 0, :, 0], torch.arange(4, 12, dtype=torch.uint8) * 10)
    out = T.random_resized_crop(image, (16, 16), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.equal(out, image)


def test_scale_jitter_range():
    x = batch(h=16, w=16)
    # S fixed at the image size: the crop is the whole image
    assert torch.equal(T.scale_jitter(x, 16, (16, 16)), x)
    # S = 32 on a 16-pixel image: a 16-crop of the 2x upscaled image covers 8x8 original pixels;
    # a column ramp of step 10 becomes a ramp of step 5 in the output.
    ramp = (torch.arange(16, dtype=torch.uint8) * 10).repeat(1, 1, 16, 1)
    out = T.scale_jitter(ramp, 16, (32, 32), generator=torch.Generator().manual_seed(0))
    steps = out[0, 0, 0, 1:-1].float().diff()  # interior: no border clamping
    assert torch.allclose(steps, torch.full_like(steps, 5.0), atol=1.0)
    with pytest.raises(ValueError, match="size"):
        T.scale_jitter(x, 16, (8, 32))


def test_rgb_eigen_matches_numpy():
    x = batch(n=20, h=5, w=5)
    vals, vecs = T.rgb_eigen(x)
    pixels = x.permute(1, 0, 2, 3).reshape(3, -1).numpy().astype(np.float64) / 255
    cov = np.cov(pixels, bias=True)
    np_vals, np_vecs = np.linalg.eigh(cov)
    np.testing.assert_allclose(vals.numpy(), np_vals[::-1], rtol=1e-5)
    for k in range(3):  # eigenvectors up to sign
        dot = abs(float(vecs[:, k].double() @ torch.from_numpy(np_vecs[:, 2 - k])))
        assert dot == pytest.approx(1.0, abs=1e-5)


def test_pca_lighting_shifts_along_eigenvectors():
    x = torch.full((50, 3, 4, 4), 0.5)
    vals, vecs = torch.tensor([1.0, 0.0, 0.0]), torch.eye(3)[:, [1, 0, 2]]  # p1 = green axis
    out = T.pca_lighting(x, vals, vecs, std=0.1, generator=torch.Generator().manual_seed(0))
    shift = out - x
    assert torch.allclose(shift[:, [0, 2]], torch.zeros(50, 2, 4, 4))  # red, blue untouched
    per_image = shift[:, 1, 0, 0]
    assert torch.allclose(shift[:, 1], per_image[:, None, None].expand(50, 4, 4))
    assert 0.05 < float(per_image.std()) < 0.15  # alpha ~ N(0, 0.1), times eigenvalue 1
    u8 = T.pca_lighting(torch.full((4, 3, 2, 2), 128, dtype=torch.uint8), *T.IMAGENET_PCA,
                        generator=torch.Generator().manual_seed(0))
    assert u8.dtype == torch.uint8


def test_resize_shorter_side():
    x = torch.full((2, 1, 10, 20), 77, dtype=torch.uint8)
    out = T.resize(x, 5)
    assert out.shape == (2, 1, 5, 10) and bool((out == 77).all())
    assert T.resize(x, (4, 6)).shape == (2, 1, 4, 6)


def test_resized_crop_boxes_follow_the_inception_rule():
    # Szegedy et al. 2015, Sec. 6: area 8%..100% of the image, aspect ratio in [3/4, 4/3].
    h, w = 40, 60
    boxes = T.resized_crop_boxes(2000, h, w, generator=torch.Generator().manual_seed(0))
    top, left, bh, bw = boxes.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (top + bh <= h) & (left + bw <= w)).all())
    area = bh * bw / (h * w)
    aspect = bw / bh
    # rounding the sides to whole pixels moves area and aspect slightly off the exact range
    assert float(area.min()) > 0.06 and float(area.max()) <= 1.0
    assert float(aspect.min()) > 0.7 and float(aspect.max()) < 1.43
    assert len(set(top.tolist())) > 10 and len(set(left.tolist())) > 10
    # with areas up to 50% of a square every first try fits (longest side <= sqrt(0.5 * 4/3)
    # < 1 of the image side), so the areas are the proposal's uniform draws: half below 0.29
    boxes = T.resized_crop_boxes(2000, 64, 64, scale=(0.08, 0.5),
                                 generator=torch.Generator().manual_seed(1))
    area = boxes[:, 2] * boxes[:, 3] / 64**2
    assert 0.45 < float((area < 0.29).double().mean()) < 0.55
    log_aspect = torch.log(boxes[:, 3] / boxes[:, 2])  # log-uniform ratio: symmetric around 0
    assert abs(float((log_aspect < 0).double().mean()) - 0.5) < 0.05


@settings(max_examples=30, deadline=None)
@given(h=st.integers(2, 9), w=st.integers(2, 9), pad=st.integers(0, 3), c=st.integers(1, 3),
       reflect=st.booleans(), seed=st.integers(0, 100), data=st.data())
def test_random_crop_windows_any_shape(h, w, pad, c, reflect, seed, data):
    if reflect:
        pad = min(pad, h - 1, w - 1)
    th = data.draw(st.integers(1, h + 2 * pad))
    tw = data.draw(st.integers(1, w + 2 * pad))
    x = batch(n=4, c=c, h=h, w=w, seed=seed)
    out = T.random_crop(x, (th, tw), pad, "reflect" if reflect else "zero",
                        generator=torch.Generator().manual_seed(seed))
    assert out.shape == (4, c, th, tw)
    for image, crop in zip(x.numpy(), out.numpy(), strict=True):
        padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)),
                        mode="reflect" if reflect else "constant")
        assert any(np.array_equal(padded[:, i : i + th, j : j + tw], crop)
                   for i in range(padded.shape[1] - th + 1)
                   for j in range(padded.shape[2] - tw + 1))
