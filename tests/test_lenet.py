"""LeNet-5 (LeCun et al. 1998) and the two teaching forms: counts, maps, Table I, RBF, init."""

from __future__ import annotations

import pytest
import torch

import cnnlab
from cnnlab.models.lenet import ScaledTanh, TrainableSubsampling, map_criterion

from zoo_helpers import count_params


def conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_out * (c_in * k * k + 1)


def fc_params(n_in: int, n_out: int) -> int:
    return n_out * (n_in + 1)


def output_shapes(model: torch.nn.Module, names: list[str], x: torch.Tensor) -> dict:
    shapes: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(
        lambda _m, _i, out, n=n: shapes.__setitem__(n, tuple(out.shape[1:]))) for n in names]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


def paper_table_i() -> list[set[int]]:
    """Section II.B's prose: the first six C3 maps read contiguous triples of S2 maps, the
    next six contiguous quadruples, the next three discontinuous quadruples, the last all six."""
    table = [{(j + d) % 6 for d in range(3)} for j in range(6)]
    table += [{(j + d) % 6 for d in range(4)} for j in range(6)]
    table += [{0, 1, 3, 4}, {1, 2, 4, 5}, {0, 2, 3, 5}]
    table += [set(range(6))]
    return table


def test_lenet5_trainable_parameters_per_layer_match_the_paper():
    m = cnnlab.create_model("lenet5")
    f = m.features
    c3_connections = sum(len(inputs) for inputs in paper_table_i())  # 6*3 + 6*4 + 3*4 + 6 = 60
    expected = {
        "c1": conv_params(1, 6, 5),  # 156
        "s2": 6 * 2,  # one coefficient and one bias per map: 12
        "c3": c3_connections * 5 * 5 + 16,  # 1,516
        "s4": 16 * 2,  # 32
        "c5": conv_params(16, 120, 5),  # 48,120
        "f6": fc_params(120, 84),  # 10,164
    }
    assert expected == {"c1": 156, "s2": 12, "c3": 1516, "s4": 32, "c5": 48120, "f6": 10164}
    measured = {name: count_params(getattr(f, name)) for name in ("c1", "s2", "c3", "s4", "c5")}
    measured["f6"] = count_params(m.f6)
    assert measured == expected
    assert count_params(m) == sum(expected.values()) == 60_000
    assert count_params(m.output) == 0  # the 840 RBF values are fixed


def test_lenet5_connection_counts_of_section_ii_b():
    # The paper counts connections: C1 122,304; C3 151,600 (params x output positions).
    m = cnnlab.create_model("lenet5").eval()
    shapes = output_shapes(m, ["features.c1", "features.c3"], torch.zeros(1, 1, 32, 32))
    assert conv_params(1, 6, 5) * 28 * 28 == 122_304
    c3_connections = sum(len(inputs) for inputs in paper_table_i())
    assert (c3_connections * 5 * 5 + 16) * 10 * 10 == 151_600  # Table I's kernels, 10x10 maps
    assert count_params(m.features.c1) * shapes["features.c1"][1] * shapes["features.c1"][2] \
        == 122_304
    assert count_params(m.features.c3) * shapes["features.c3"][1] * shapes["features.c3"][2] \
        == 151_600


def test_lenet5_map_sizes_of_fig_2():
    m = cnnlab.create_model("lenet5").eval()
    names = [f"features.{n}" for n in ("c1", "s2", "c3", "s4", "c5")] + ["f6", "output"]
    shapes = output_shapes(m, names, torch.zeros(1, 1, 32, 32))
    # 32-5+1 = 28; 28/2 = 14; 14-5+1 = 10; 10/2 = 5; 5-5+1 = 1
    assert [shapes[n] for n in names] == [
        (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1), (84,), (10,)]


def test_c3_connection_table_is_table_i():
    c3 = cnnlab.create_model("lenet5").features.c3
    mask = c3.connection_mask()
    assert mask.shape == (16, 6)
    assert [set(torch.nonzero(row).flatten().tolist()) for row in mask] == paper_table_i()


def test_c3_output_maps_ignore_unconnected_inputs():
    c3 = cnnlab.create_model("lenet5").features.c3
    table = paper_table_i()
    x = torch.randn(1, 6, 14, 14)
    base = c3(x)
    for i in range(6):
        bumped = x.clone()
        bumped[:, i] += 1.0
        changed = (c3(bumped) - base).abs().flatten(2).amax(-1)[0] > 1e-6
        assert changed.tolist() == [i in inputs for inputs in table]


def test_rbf_prototypes_are_fixed_plus_minus_one_7x12_bitmaps():
    m = cnnlab.create_model("lenet5")
    protos = m.output.prototypes
    assert protos.shape == (10, 7 * 12)
    assert set(protos.unique().tolist()) == {-1.0, 1.0}
    assert not protos.requires_grad
    assert "output.prototypes" in m.state_dict()
    assert all(p is not protos for p in m.parameters())
    assert len({tuple(p.tolist()) for p in protos}) == 10  # ten distinct codes
    # Stored 12 rows of 7: the first and last rows of every bitmap are the white margin.
    grids = protos.view(10, 12, 7)
    assert (grids[:, 0] == -1).all() and (grids[:, -1] == -1).all()


def test_logits_are_minus_euclidean_distance_to_prototypes():
    m = cnnlab.create_model("lenet5")
    protos = m.output.prototypes
    x = torch.randn(3, 84)
    expected = ((x[:, None, :] - protos[None]) ** 2).sum(-1)
    torch.testing.assert_close(m.output(x), expected)
    # A state equal to prototype k is at distance 0 from k: logit 0, the argmax.
    logits = -m.output(protos)
    assert torch.equal(logits.argmax(1), torch.arange(10))
    assert torch.allclose(logits.diagonal(), torch.zeros(10))


def test_squashing_function_a_1_7159_s_two_thirds():
    f = ScaledTanh()
    a = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    torch.testing.assert_close(f(a), 1.7159 * torch.tanh(a * 2 / 3))
    # Appendix A: the constants make f(+-1) = +-1.
    torch.testing.assert_close(f(torch.tensor([1.0, -1.0])), torch.tensor([1.0, -1.0]),
                               atol=1e-4, rtol=0)


def test_trainable_subsampling_sums_windows_times_coefficient_plus_bias():
    s = TrainableSubsampling(2)
    with torch.no_grad():
        s.weight.copy_(torch.tensor([0.5, -2.0]))
        s.bias.copy_(torch.tensor([1.0, 0.25]))
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    top_left = x[0, :, 0:2, 0:2].sum((-1, -2))  # channel sums of the first window
    expected = top_left * torch.tensor([0.5, -2.0]) + torch.tensor([1.0, 0.25])
    out = s(x)
    assert out.shape == (1, 2, 2, 2)
    torch.testing.assert_close(out[0, :, 0, 0], expected)


def test_init_is_uniform_within_2_4_over_fan_in():
    torch.manual_seed(3)
    m = cnnlab.create_model("lenet5")
    f = m.features
    for module, fan_in in [(f.c1, 25), (f.s2, 4), (f.s4, 4), (f.c5, 400), (m.f6, 120)]:
        bound = 2.4 / fan_in
        w = module.weight.detach()
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.5 * bound  # really spread over the range, not tiny
    # C3 map 0 reads 3 maps (fan-in 75), map 15 reads all 6 (fan-in 150).
    dense = f.c3.dense_weight().detach()
    assert dense[0].abs().max() <= 2.4 / 75 and dense[0].abs().max() > 2.4 / 150
    assert dense[15].abs().max() <= 2.4 / 150


def test_lenet5_needs_32x32_and_at_most_ten_classes():
    m = cnnlab.create_model("lenet5")
    with pytest.raises(ValueError, match="lenet5.*1x32x32.*28, 28"):
        m(torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="num_classes must be 1..10, got 11"):
        cnnlab.create_model("lenet5", num_classes=11)


def test_cross_entropy_on_lenet5_logits_trains():
    torch.manual_seed(0)
    m = cnnlab.create_model("lenet5")
    x, y = torch.randn(16, 1, 32, 32), torch.arange(16) % 10
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_lenet5_modern_parameters():
    m = cnnlab.create_model("lenet5_modern")
    expected = (conv_params(1, 6, 5) + conv_params(6, 16, 5)  # 156 + 2,416: full C3
                + fc_params(16 * 5 * 5, 120) + fc_params(120, 84) + fc_params(84, 10))
    assert expected == 156 + 2416 + 48120 + 10164 + 850 == 61_706
    assert count_params(m) == expected
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_lenet_lecture_parameters_and_map_sizes():
    m = cnnlab.create_model("lenet_lecture").eval()
    expected = (conv_params(1, 20, 5) + conv_params(20, 50, 5)
                + fc_params(50 * 7 * 7, 500) + fc_params(500, 10))
    assert expected == 520 + 25_050 + 1_225_500 + 5_010 == 1_256_080
    assert count_params(m) == expected
    names = ["features.0", "features.2", "features.3", "features.5"]
    shapes = output_shapes(m, names, torch.zeros(1, 1, 28, 28))
    # "same" 5x5 convs (pad 2) keep the size; each 2x2 pool halves it: 28, 14, 14, 7.
    assert [shapes[n] for n in names] == [(20, 28, 28), (20, 14, 14), (50, 14, 14), (50, 7, 7)]


def test_mnist_models_declare_dataset_recipe_and_paper_error():
    info = cnnlab.model_info("lenet5")
    assert (info.dataset, info.recipe, info.top1_error, info.input_size) == (
        "mnist", "lecun1998", 0.95, (1, 32, 32))
    for name in ("lenet5_modern", "lenet_lecture"):
        assert cnnlab.model_info(name).input_size == (1, 28, 28)


def test_map_criterion_is_eq_9_and_tends_to_cross_entropy():
    torch.manual_seed(0)
    y = torch.rand(4, 10) * 50  # RBF distances
    targets = torch.tensor([3, 0, 9, 5])
    j = 7.0
    expected = sum(y[p, targets[p]] + torch.log(torch.exp(torch.tensor(-j))
                                                + torch.exp(-y[p]).sum()) for p in range(4)) / 4
    torch.testing.assert_close(map_criterion(-y, targets, j=j), expected)
    ce = torch.nn.functional.cross_entropy(-y, targets)
    assert map_criterion(-y, targets, j=j) > ce  # the rubbish class only adds to the log-sum
    torch.testing.assert_close(map_criterion(-y, targets, j=1e4), ce)
