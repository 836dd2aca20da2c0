import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.feature_space import FeatureSpace, with_price_band
from engine.data.id_map import IdMap
from engine.data.interactions import interaction_matrix, relevant_matrix


def test_price_band_is_relative_to_category() -> None:
    items = pl.DataFrame(
        {"category": ["tv"] * 3 + ["socks"] * 3, "price": [300.0, 600.0, 900.0, 1.0, 2.0, 3.0]}
    )
    assert with_price_band(items)["price_band"].to_list() == ["low", "mid", "high"] * 2


def test_encode_ignores_values_unseen_in_training() -> None:
    train = pl.DataFrame({"region": ["north", "south"], "tags": [["organic", None], []]})
    space = FeatureSpace.from_frame(train, ["region", "tags"])
    assert space.names == ("region=north", "region=south", "tag=organic")
    rows = space.encode(
        pl.DataFrame({"region": ["west", "north"], "tags": [["organic"], None]}), ["region", "tags"]
    )
    assert rows.toarray().tolist() == [[0, 0, 1], [1, 0, 0]]
    assert space.encode_one({"region": "south", "tags": ["new"]}).toarray().tolist() == [[0, 1, 0]]


def test_interaction_weights_and_relevance() -> None:
    events = pl.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "ghost"],
            "item_id": ["x", "x", "y", "y", "x"],
            "event_type": ["view", "purchase", "cart", "view", "view"],
        }
    )
    customers, items = IdMap(["a", "b"]), IdMap(["x", "y"])
    m = interaction_matrix(
        events, customers, items, event_weights={"view": 1.0, "cart": 3.0, "purchase": 5.0}
    )
    # a: view + purchase of x = 1 + 5, cart of y = 3; b: view of y = 1; the unknown customer is ignored
    expected = np.log1p(np.array([[6.0, 3.0], [0.0, 1.0]]))
    np.testing.assert_allclose(m.toarray(), expected, rtol=1e-6)
    later = pl.DataFrame(
        {"customer_id": ["a", "a", "b"], "item_id": ["x", "z0", "x"], "event_type": ["view"] * 3}
    )
    rel = relevant_matrix(later.filter(pl.col("item_id") != "z0"), customers, items, exclude=m)
    assert rel.toarray().tolist() == [[0, 0], [1, 0]]


VALUES = st.sampled_from(["a", "b", "c", "", "unseen"])


@settings(max_examples=60, deadline=None)
@given(
    region=st.lists(st.one_of(st.none(), VALUES), min_size=1, max_size=12),
    tags=st.lists(st.one_of(st.none(), st.lists(st.one_of(st.none(), VALUES), max_size=4)), max_size=12),
)
def test_encoding_a_frame_matches_encoding_each_row_alone(
    region: list[str | None], tags: list[list[str | None] | None]
) -> None:
    """The vectorised frame encoding gives each row exactly what serving's one-row encoding gives it:
    nulls, empty strings and unseen values left out, a value repeated in a list cell counted once."""
    n = len(region)
    tags = (tags + [None] * n)[:n]
    frame = pl.DataFrame(
        {"region": region, "tags": tags}, schema={"region": pl.Utf8, "tags": pl.List(pl.Utf8)}
    )
    space = FeatureSpace.from_frame(
        pl.DataFrame({"region": ["a", "b"], "tags": [["b", "c"], ["a"]]}), ["region", "tags"]
    )
    encoded = space.encode(frame, ["region", "tags"])
    assert encoded.shape == (n, len(space))
    for i in range(n):
        row_tags = [t for t in (tags[i] or []) if t is not None]
        alone = space.encode_one({"region": region[i], "tags": row_tags})
        assert (encoded[i] != alone).nnz == 0
    assert set(encoded.data.tolist()) <= {1.0}
