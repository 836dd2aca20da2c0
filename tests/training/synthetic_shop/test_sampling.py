"""The segmented inverse-CDF sampler draws only weighted elements of the requested segment."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.synthetic_shop.sampling import SegmentedSampler


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=40), data=st.data())
def test_segmented_sampler_draws_only_weighted_elements_of_the_segment(
    weights: list[float], data: st.DataObject
) -> None:
    n_segments = data.draw(st.integers(1, 5))
    segment = np.array(
        data.draw(st.lists(st.integers(0, n_segments - 1), min_size=len(weights), max_size=len(weights)))
    )
    weight = np.array(weights)
    totals = np.bincount(segment, weights=weight, minlength=n_segments)
    if (totals[np.bincount(segment, minlength=n_segments) > 0] <= 0).any():
        with pytest.raises(ValueError, match="zero total sampling weight"):
            SegmentedSampler.build(segment, weight, n_segments)
        return
    sampler = SegmentedSampler.build(segment, weight, n_segments)
    present = np.flatnonzero(totals > 0)
    wanted = np.repeat(present, 50)
    u = (
        np.concatenate([[0.0, 1.0 - 1e-12], np.random.default_rng(0).random(len(wanted) - 2)])
        if len(wanted) > 2
        else np.zeros(len(wanted))
    )
    drawn = sampler.draw(wanted, u)
    assert (segment[drawn] == wanted).all()
    assert (weight[drawn] > 0).all()
