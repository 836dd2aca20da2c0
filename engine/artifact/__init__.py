"""The model artifact: the one folder training writes and serving loads.

``folder`` makes a versioned folder appear complete or not at all and checks every file against the
manifest's checksums on open; ``manifest`` says what a manifest may hold (known keys, its version is
its folder's name); ``signing`` protects the manifest's own bytes (a digest always, an Ed25519
signature with a key); ``arrays`` is the one way any component writes and reads its arrays (``.npy``
without pickle); ``layout`` names every entry of an artifact once; ``contents`` writes an artifact's
contents and reads them back (``load_artifact``). The names below are the folder's public interface;
``contents`` is imported from its module, because it depends on the components (models, id maps...)
that themselves import ``arrays`` from this package.
"""

from engine.artifact.errors import ArtifactError
from engine.artifact.folder import (
    LATEST,
    Artifact,
    ArtifactWriter,
    data_fingerprint,
    library_versions,
    list_versions,
    manifest_integrity,
    new_version,
    open_artifact,
    sha256_file,
)
from engine.artifact.manifest import ARTIFACT_FORMAT_VERSION, MANIFEST, MANIFEST_KEYS
from engine.artifact.signing import (
    DIGEST_FILE,
    ENV_ARTIFACT_KEY_FILE,
    SIGNATURE_FILE,
    ArtifactKeyError,
    ArtifactSigner,
    ArtifactVerifier,
    IntegrityStatus,
    ManifestIntegrity,
)

__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "DIGEST_FILE",
    "ENV_ARTIFACT_KEY_FILE",
    "LATEST",
    "MANIFEST",
    "MANIFEST_KEYS",
    "SIGNATURE_FILE",
    "Artifact",
    "ArtifactError",
    "ArtifactKeyError",
    "ArtifactSigner",
    "ArtifactVerifier",
    "ArtifactWriter",
    "IntegrityStatus",
    "ManifestIntegrity",
    "data_fingerprint",
    "library_versions",
    "list_versions",
    "manifest_integrity",
    "new_version",
    "open_artifact",
    "sha256_file",
]
