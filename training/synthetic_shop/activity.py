"""How much each customer does: interactions per customer and the view -> cart -> purchase funnel.

The config fixes the total number of event rows; the funnel decides how many rows one interaction
(a product view) expands to, so the shop model derives the scale of per-customer activity from both.
"""

from __future__ import annotations

import numpy as np

ACTIVITY_SIGMA = 0.6  # lognormal spread of interactions per customer
MIN_INTERACTIONS = 4  # every customer views at least this many items (about 5-6 event rows)

# The funnel: about one product view in ten leads to an add-to-cart and about a third of carts are
# bought, as in typical e-commerce (add-to-cart rates of 5-15%, cart abandonment near 70%). The event
# count is fixed by the config, so an unrealistically eager funnel (it was 30% and 50%: 15% of views
# bought) spends rows on carts and purchases of items already viewed instead of on more distinct
# interactions; with this funnel the same rows hold about 20% more of them, which is what persona
# inference and collaborative filtering learn from.
CART_RATE = 0.1  # chance a view (of an in-stock item) is followed by an add-to-cart
PURCHASE_GIVEN_CART = 0.35  # chance an add-to-cart is followed by a purchase
MAX_CART_DELAY_SECONDS = 120  # a cart follows its view by 5 s .. this
MAX_PURCHASE_DELAY_SECONDS = 300  # a purchase follows its cart by 5 s .. this
MAX_FOLLOW_UP_SECONDS = MAX_CART_DELAY_SECONDS + MAX_PURCHASE_DELAY_SECONDS


def interaction_scale(mean_interactions: float) -> float:
    """Scale of the lognormal activity so that E[max(floor, scale * activity)] hits the target mean."""
    activity = np.random.default_rng(0).lognormal(-(ACTIVITY_SIGMA**2) / 2, ACTIVITY_SIGMA, 200_000)
    if mean_interactions <= MIN_INTERACTIONS:
        return 0.0  # every customer sits at the floor; the requested total is below what the floor allows
    low, high = 0.0, mean_interactions
    while np.maximum(MIN_INTERACTIONS, high * activity).mean() < mean_interactions:
        high *= 2.0
    for _ in range(60):
        middle = (low + high) / 2.0
        if np.maximum(MIN_INTERACTIONS, middle * activity).mean() < mean_interactions:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0
