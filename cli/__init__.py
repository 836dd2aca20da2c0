"""The ``persona-engine`` command line: one entry point over the training jobs, the reports and the server.

It is its own package because it drives every layer (training jobs, artifacts, ``serve``), so it
belongs to none of them; nothing below it imports it.
"""
