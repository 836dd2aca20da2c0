"""Personas as software: the catalog, the persona mix value, inference of each customer's mix from
behaviour (per shopping context), the evidence behind each weight, discovery of segments the catalog
misses, drift of a customer's mix over time, and which mix a request is served with."""
