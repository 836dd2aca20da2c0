"""Persona-conditioned recommenders behind one interface (``base.Recommender``: fit, score a batch
of customers or persona mixes, recommend, save, load): popularity, implicit ALS/BPR blended with
persona vectors, and the LightFM hybrid. ``registry`` maps a config's model kind to its class, which
is the one place a new model is added."""
