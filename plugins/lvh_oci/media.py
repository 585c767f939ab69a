"""Media types and annotation keys: the OCI/Docker ones lvh reads, and lvh's own artifact format.

lvh's own format (``--format lvh``, the default for push): an OCI image manifest whose
``artifactType`` is ``application/vnd.lvh.<kind>.v1`` and whose config blob
(:data:`LVH_CONFIG`) holds ``{"lvh": 1, "kind", "name", "artifact": Artifact.to_json(), ...}``.
It has one layer, a zstd tar of the artifact's directory (paths relative to the cache entry).
Manifest annotations carry the cache key and metadata, so ``pull`` can land the artifact in the
workdir cache under the same key it had where it was built.

Upstream's layout (``--format upstream``, and anything that is not lvh's format when pulling):
a container image whose layers hold ``data/images/<name>.qcow2.zst`` (images) or
``data/kernels/<version>/{boot,lib/modules}`` (kernels), as cilium/little-vm-helper-images builds.
"""

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
LAYER_TYPES = {
    LAYER_TAR: "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    LAYER_GZIP: "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_FOREIGN_GZIP: "gzip",
    LAYER_ZSTD: "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
}

#: lvh's artifact config blob, and the artifactType of each kind.
LVH_CONFIG = "application/vnd.lvh.artifact.config.v1+json"


def lvh_artifact_type(kind: str) -> str:
    return f"application/vnd.lvh.{kind}.v1"


# Annotation keys (manifest level). The OCI pre-defined ones are used where they fit.
A_KEY = "dev.lvh.artifact.key"
A_KIND = "dev.lvh.artifact.kind"
A_NAME = "dev.lvh.artifact.name"
A_VERSION = "dev.lvh.artifact.version"
A_LVH = "dev.lvh.version"
A_CREATED = "org.opencontainers.image.created"
A_TITLE = "org.opencontainers.image.title"
A_DESCRIPTION = "org.opencontainers.image.description"
A_REF_NAME = "org.opencontainers.image.ref.name"

#: Where upstream keeps its payloads inside the image filesystem.
UPSTREAM_IMAGES_DIR = "data/images"
UPSTREAM_KERNELS_DIR = "data/kernels"
#: Upstream's kernel tag scheme: ``<version>-<YYYYMMDD.HHMMSS>`` or ``<version>-main``.
KERNEL_TAG_RE = r"^(.+)-([0-9]+\.[0-9]+|main)$"
#: Upstream's kernel repository (``lvh kernels pull 6.6-main``).
DEFAULT_KERNEL_REPO = "quay.io/lvh-images/kernel-images"
