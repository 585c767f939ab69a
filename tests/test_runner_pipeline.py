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
