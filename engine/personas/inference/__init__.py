"""Persona inference: a latent-class model that turns each customer's events into a soft persona mix.

Each event is explained by one persona drawn from the customer's mix; given the persona, each fact of
the event is drawn from that persona's own distribution and the item from the population's item
choice tilted towards the persona's tastes. Fitting is EM over all events at once, seeded by and
pulled towards the catalog; customers' mixes are posterior means under an empirical-Bayes "mostly
one persona" prior; context mixes are shrunk towards the customer's overall mix; the fitted model
folds in new events without refitting.

Modules, from the value callers use to the numerics beneath it:

- ``model``: ``PersonaInferenceModel`` (fit, infer, explain, save/load), what the rest of the engine uses.
- ``config``, ``errors``, ``inferred_mixes``: its settings, its errors and the mixes it returns.
- ``demographic_prior``: cold-start mixes from demographics.
- ``behaviour``: the fitted parameters; ``model_files``: their files (manifest plus ``.npy`` arrays).
- ``em_fit``: the EM; ``em_extrapolation``: its SQUAREM steps; ``catalog_seed``: its starting point;
  ``item_choice``: the item part of the model.
- ``mix_prior``, ``mix_posterior``, ``fold_in``: the prior over mixes, its variational posterior, fold-in.
- ``signals``: the evidence behind each weight; ``segments``: sums over contiguous groups of events.
"""
