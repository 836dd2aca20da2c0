"""The model artifact: the one folder training writes and serving loads.

``folder`` makes a versioned folder appear complete or not at all and checks every file against the
manifest's checksums on open; ``arrays`` is the one way any component writes and reads its arrays
(``.npy`` without pickle); ``layout`` names every entry of an artifact once; ``contents`` writes an
artifact's contents and reads them back (``load_artifact``). The names below are the folder's public
interface; ``contents`` is imported from its module, because it depends on the components (models, id
maps...) that themselves import ``arrays`` from this package.
"""

from engine.artifact.folder import (
    ARTIFACT_FORMAT_VERSION,
    LATEST,
    MANIFEST,
    Artifact,
    ArtifactError,
    ArtifactWriter,
    data_fingerprint,
    library_versions,
    list_versions,
    new_version,
    open_artifact,
    sha256_file,
)

__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "LATEST",
    "MANIFEST",
    "Artifact",
    "ArtifactError",
    "ArtifactWriter",
    "data_fingerprint",
    "library_versions",
    "list_versions",
    "new_version",
    "open_artifact",
    "sha256_file",
]
