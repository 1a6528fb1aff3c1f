"""Property tests are derandomised: two runs of a test draw the same examples."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def draws() -> list[int]:
    seen: list[int] = []

    @settings(max_examples=25, deadline=None)
    @given(st.integers(-10**9, 10**9))
    def record(n: int) -> None:
        seen.append(n)

    record()
    return seen


def test_two_runs_draw_the_same_examples():
    if os.environ.get("HYPOTHESIS_PROFILE", "cnnlab") != "cnnlab":
        pytest.skip("HYPOTHESIS_PROFILE asks for random examples")
    assert settings.default.derandomize and settings.default.database is None
    first, second = draws(), draws()
    assert len(set(first)) > 5 and first == second
