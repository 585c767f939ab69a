"""lvh_oci: images, kernels and rootfs tarballs through OCI registries, with no Docker daemon.

- :mod:`.reference` parses ``[registry/]repo[:tag][@digest]`` and platforms.
- :mod:`.auth` finds credentials (env, docker/podman config files, credential helpers).
- :mod:`.client` speaks the OCI distribution HTTP API (httpx): token/basic auth, retries with
  backoff, resumable and digest-verified blob downloads, monolithic uploads, tags, catalog.
- :mod:`.archive` makes and extracts tar layers (zstd/gzip), hardened against hostile input.
- :mod:`.transfer` pushes and pulls artifacts in lvh's own format or upstream's layout, and lands
  pulled artifacts in the workdir cache as if built here.
- :mod:`.drivers` are the ``oci`` drivers of ``lvh.kernel``, ``lvh.rootfs`` and ``lvh.disk``.
- :mod:`.hooks` adds the CLI commands and resolves ``lvh run --image/--kernel REF``.

Only :mod:`lvh.api` is imported from lvh.
"""
