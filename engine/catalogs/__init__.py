"""Bundled persona catalogs (TOML): the default e-commerce personas and the ones tuned for the
MovieLens and Online Retail adapters. Package data, read with ``importlib.resources``."""
