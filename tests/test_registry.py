import dataclasses

import pytest
import torch.nn as nn

import cnnlab
from cnnlab import registry


def test_list_models_is_sorted_and_filters_with_fnmatch():
    names = cnnlab.list_models()
    assert names == sorted(names, key=registry.natural_key) and "alexnet" in names
    assert cnnlab.list_models("alex*") == [n for n in names if n.startswith("alex")]
    assert cnnlab.list_models("no-such-*") == []


def test_unknown_name_lists_closest_names():
    with pytest.raises(ValueError, match="unknown model 'alexnett'.*alexnet"):
        cnnlab.create_model("alexnett")
    with pytest.raises(ValueError, match="unknown model"):
        cnnlab.model_info("zzzz")


def test_duplicate_registration_raises():
    info = dataclasses.asdict(cnnlab.model_info("alexnet"))
    del info["name"]
    info["paper"] = cnnlab.model_info("alexnet").paper
    with pytest.raises(ValueError, match="already registered"):

        @registry.register_model(**info)
        def alexnet(**kwargs):  # noqa: F811 — the point of the test
            return nn.Identity()


def test_model_info_is_frozen_and_complete():
    info = cnnlab.model_info("alexnet")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.params = 1  # type: ignore[misc]
    assert info.year == 2012 and "Krizhevsky" in info.authors and info.url.startswith("http")
    assert info.top1 == pytest.approx(56.522)


def test_out_indices_need_features_only():
    with pytest.raises(ValueError, match="features_only"):
        cnnlab.create_model("alexnet", out_indices=(0,))
    with pytest.raises(ValueError, match="out of range"):
        cnnlab.create_model("alexnet", features_only=True, out_indices=(9,))


def test_every_model_declares_metadata():
    for name in cnnlab.list_models():
        info = cnnlab.model_info(name)
        assert info.paper.title and info.paper.authors and 1989 <= info.year <= 2026, name
        assert len(info.input_size) == 3 and info.params > 0 and info.recipe, name
        assert info.top1_error is None or info.error_source, name
