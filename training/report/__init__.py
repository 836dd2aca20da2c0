"""``persona-engine report``: one self-contained HTML page (and its numbers as JSON) about an artifact.

Each module computes one section from the artifact (and, when present, the data it was trained on);
``evaluation_report`` assembles them and ``html_document`` renders them without any network access.
"""
