"""A pipeline's ``runs:`` through the engine with the real microvm runner (exec mode), the image
and kernel coming from minimal test drivers that hand over files made by the runner fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lvh.api import Context, DiskArtifact, DiskFormatter, KernelArtifact, KernelBuilder, Schema, fields
from lvh.config import load_config
from lvh.engine import Engine
from lvh.plugins import DriverRegistry, default_registry

from .runner_fixtures import *  # noqa: F403 (session fixtures)
from .runner_fixtures import need

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


class FileDisk(DiskFormatter):
    name = "file-disk"
    needs_rootfs = False

    class Options(Schema):
        path = fields.Str(required=True)

    def build(self, ctx: Context, rootfs: object = None) -> DiskArtifact:
        assert ctx.out is not None
        out = ctx.out / "disk.raw"
        shutil.copy(self.options["path"], out)
        return DiskArtifact(root=ctx.out, path=out, format="raw")


class FileKernel(KernelBuilder):
    name = "file-kernel"

    class Options(Schema):
        path = fields.Str(required=True)

    def build(self, ctx: Context) -> KernelArtifact:
        assert ctx.out is not None
        out = ctx.out / "bzImage"
        shutil.copy(self.options["path"], out)
        return KernelArtifact(root=ctx.out, image=out)


def test_pipeline_run_exit_code_and_output(tmp_path: Path, debian_image, runner_kernel) -> None:
    need("qemu-system-x86_64", "busybox")
    reg = DriverRegistry(dict(default_registry.extra))
    reg.register("lvh.disk", "file-disk", FileDisk)
    reg.register("lvh.kernel", "file-kernel", FileKernel)
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"""
api_version: 1
images:
  - name: base
    disk: {{formatter: file-disk, path: {debian_image.path}}}
kernels:
  - name: k
    builder: file-kernel
    path: {runner_kernel.image}
runs:
  - name: smoke
    runner: microvm
    image: base
    kernel: k
    cpus: 1
    memory: 512M
    command: "echo from-pipeline; exit 9"
""")
    got: list[tuple[str, bytes]] = []
    cfg = load_config(conf, registry=reg)
    summary = Engine(cfg, on_output=lambda s, d: got.append((s, d))).run()
    assert summary["exit_code"] == 9
    assert summary["runs"][0]["status"] == "exited"
    assert b"".join(d for s, d in got if s == "stdout") == b"from-pipeline\n"
    assert Path(summary["runs"][0]["console_log"]).exists()


def test_lvh_built_image_through_the_pipeline(tmp_path: Path, runner_kernel) -> None:
    """The images engineers' real drivers (mmdebstrap → mkfs qcow2 → chroot customize) and the
    microvm runner: the command sees the customization; the published image is unchanged.
    The workdir lives in the test cache, so the image is built once."""
    need("qemu-system-x86_64", "busybox", "mmdebstrap", "mke2fs")
    import hashlib

    from .runner_fixtures import TEST_CACHE

    reg = DriverRegistry(dict(default_registry.extra))
    reg.register("lvh.kernel", "file-kernel", FileKernel)
    work = TEST_CACHE / "runner-pipeline"
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"""
api_version: 1
workdir: {work}
images:
  - name: base
    rootfs: {{provider: mmdebstrap, suite: bookworm, variant: minbase, mirror: http://deb.debian.org/debian}}
    disk: {{formatter: mkfs, size: 1G, format: qcow2}}
    customize:
      - customizer: chroot
        actions:
          - {{type: set-hostname, hostname: lvh-test}}
kernels:
  - name: k
    builder: file-kernel
    path: {runner_kernel.image}
runs:
  - name: built
    runner: microvm
    image: base
    kernel: k
    cpus: 1
    memory: 512M
    command: "cat /etc/hostname; echo scribble > /etc/hostname; exit 5"
""")
    got: list[tuple[str, bytes]] = []
    summary = Engine(load_config(conf, registry=reg), on_output=lambda s, d: got.append((s, d))).run()
    image = Path(summary["outputs"]["image:base"]) if "image:base" in summary["outputs"] else None
    assert summary["exit_code"] == 5, summary
    assert b"".join(d for s, d in got if s == "stdout") == b"lvh-test\n"
    if image is None:
        image = next((work / "images").glob("base.*"))
    digest = hashlib.sha256(image.resolve().read_bytes()).hexdigest()
    got.clear()
    summary = Engine(load_config(conf, registry=reg), on_output=lambda s, d: got.append((s, d))).run()
    assert b"".join(d for s, d in got if s == "stdout") == b"lvh-test\n"  # the scribble did not stick
    assert hashlib.sha256(image.resolve().read_bytes()).hexdigest() == digest
    # `lvh run` on the named outputs: the image in the cache and the kernel directory.
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "lvh.cli.main", "run", "--runner", "microvm", "--image",
                        str(work / "images" / f"base.{image.suffix.lstrip('.')}"), "--kernel",
                        str(work / "kernels" / "k"), "--mem", "512M", "--cpu", "1", "--",
                        "cat /etc/hostname; exit 3"], capture_output=True, text=True, timeout=200,
                       env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert (r.returncode, r.stdout) == (3, "lvh-test\n"), r.stderr
