"""Turning model scores into the list a page shows: top-k selection, the exact candidate index for
large catalogs, request filters, promotions and pins, diversity, list assembly and the per-persona
explanation of each item's score."""
