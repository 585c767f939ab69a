"""Fake drivers for engine unit tests: they write small files and record what they did."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lvh.api import (
    Context,
    Customizer,
    DiskArtifact,
    DiskFormatter,
    KernelArtifact,
    KernelBuilder,
    RootfsArtifact,
    RootfsProvider,
    Runner,
    RunResult,
    RunSpec,
    Schema,
    Size,
    StageError,
    fields,
)
from lvh.plugins import DriverRegistry

LOG_ENV = "LVH_FAKE_LOG"


def record(event: str, **kw: Any) -> None:
    """Append an event to the file named by $LVH_FAKE_LOG (works across processes)."""
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"event": event, **kw}) + "\n")


def events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


class FakeRootfs(RootfsProvider):
    name = "fake"

    class Options(Schema):
        suite = fields.Str(load_default="bookworm")
        packages = fields.List(fields.Str(), load_default=list)
        fail = fields.Bool(load_default=False)
        sleep = fields.Float(load_default=0.0)

    def build(self, ctx: Context) -> RootfsArtifact:
        record("rootfs", target=ctx.stage.target if ctx.stage else "?", suite=self.options["suite"])
        assert ctx.out is not None
        if self.options["sleep"]:
            time.sleep(self.options["sleep"])
        tree = ctx.out / "tree"
        tree.mkdir()
        (tree / "etc").mkdir()
        (tree / "etc" / "os-release").write_text(f"suite={self.options['suite']}\n")
        (tree / "packages").write_text("\n".join(self.options["packages"]))
        if self.options["fail"]:
            (tree / "partial").write_text("half done")
            if os.environ.get("LVH_FAKE_HANG"):
                pidfile = Path(os.environ[LOG_ENV]).parent / "hang.pid"
                ctx.run("sh", "-c", f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile} && exec sleep 60")
            ctx.run("sh", "-c", "echo bootstrap failed: no such package >&2; exit 3")
        return RootfsArtifact(root=ctx.out, path=tree, format="dir")


class FakeDisk(DiskFormatter):
    name = "fakedisk"
    default_customizer = "fakecust"

    class Options(Schema):
        size = Size(load_default="1G")
        format = fields.Str(load_default="raw")

    def build(self, ctx: Context, rootfs: RootfsArtifact | None) -> DiskArtifact:
        assert ctx.out is not None and rootfs is not None
        record("disk", target=ctx.stage.target if ctx.stage else "?")
        files = sorted(str(p.relative_to(rootfs.path)) for p in rootfs.path.rglob("*"))
        img = ctx.out / f"disk.{self.options['format']}"
        img.write_text(json.dumps({"files": files, "size": self.options["size"]}))
        return DiskArtifact(root=ctx.out, path=img, format=self.options["format"], size=self.options["size"])

    def derive(self, ctx: Context, parent: DiskArtifact) -> DiskArtifact:
        assert ctx.out is not None
        record("derive", target=ctx.stage.target if ctx.stage else "?", parent=str(parent.path))
        img = ctx.out / "disk.qcow2"
        img.write_text(json.dumps({"backing": str(parent.path)}))
        return DiskArtifact(root=ctx.out, path=img, format="qcow2", backing=parent.path, size=parent.size)


class FakeCustomizer(Customizer):
    name = "fakecust"
    targets = frozenset({"rootfs", "disk"})

    class Options(Schema):
        actions = fields.List(fields.Dict(), required=True)

    def customize(self, ctx: Context, target: RootfsArtifact | DiskArtifact) -> RootfsArtifact | DiskArtifact:
        assert ctx.out is not None
        record("customize", target=ctx.stage.target if ctx.stage else "?", on=target.kind,
               actions=self.options["actions"])
        if isinstance(target, RootfsArtifact):
            import shutil

            shutil.copytree(target.path, ctx.out / "tree", symlinks=True)
            (ctx.out / "tree" / "customized").write_text(json.dumps(self.options["actions"]))
            return RootfsArtifact(root=ctx.out, path=ctx.out / "tree", format="dir")
        img = ctx.out / target.path.name
        img.write_text(target.path.read_text() + json.dumps(self.options["actions"]))
        return DiskArtifact(root=ctx.out, path=img, format=target.format, backing=target.backing, size=target.size)


class TreeOnlyCustomizer(FakeCustomizer):
    name = "treeonly"
    targets = frozenset({"rootfs"})


class FakeKernel(KernelBuilder):
    name = "fakekernel"

    class Options(Schema):
        version = fields.Str(load_default="6.1.0-fake")
        config_groups = fields.List(fields.Str(), load_default=list)

    def build(self, ctx: Context) -> KernelArtifact:
        assert ctx.out is not None
        record("kernel", target=ctx.stage.target if ctx.stage else "?")
        (ctx.out / "boot").mkdir()
        img = ctx.out / "boot" / f"vmlinuz-{self.options['version']}"
        img.write_bytes(b"\x7fKERNEL")
        return KernelArtifact(root=ctx.out, image=img, version=self.options["version"])


class FakeRunner(Runner):
    name = "fakerun"

    class Options(Schema):
        accel = fields.Str(load_default="auto")

    def command_line(self, ctx: Context, spec: RunSpec) -> list[str]:
        return ["fake-vm", "-kernel", str(spec.kernel.image if spec.kernel else "image"), "-cmd", spec.command or ""]

    def run(self, ctx: Context, spec: RunSpec) -> RunResult:
        record("run", target=spec.name, command=spec.command)
        if spec.command and spec.command.startswith("exit "):
            code = int(spec.command.split()[1])
        else:
            code = 0
        if spec.on_output:
            spec.on_output("stdout", f"ran {spec.command}\n".encode())
        if spec.command == "crash":
            raise StageError("the VM did not boot", hint="look at the console log")
        return RunResult(root=spec.state_dir or Path("."), status="exited", exit_code=code)


FAKES = {
    ("lvh.rootfs", "fake"): FakeRootfs,
    ("lvh.disk", "fakedisk"): FakeDisk,
    ("lvh.customize", "fakecust"): FakeCustomizer,
    ("lvh.customize", "treeonly"): TreeOnlyCustomizer,
    ("lvh.kernel", "fakekernel"): FakeKernel,
    ("lvh.runner", "fakerun"): FakeRunner,
}


def registry() -> DriverRegistry:
    return DriverRegistry(dict(FAKES), entry_points=False)


PIPELINE = """\
api_version: 1
images:
  - name: base
    rootfs: {provider: fake, suite: bookworm, packages: [iproute2]}
    disk: {formatter: fakedisk, size: 2G}
    customize:
      - customizer: fakecust
        actions: [{type: set-hostname, hostname: lvh}]
  - name: tools
    parent: base
    packages: [bpftool]
kernels:
  - name: k1
    builder: fakekernel
runs:
  - name: smoke
    runner: fakerun
    image: tools
    kernel: k1
    command: "exit 0"
"""


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes CONF [lvh args…]``: the real CLI with the fake drivers installed."""
    import sys

    from lvh.cli.main import main as lvh_main
    from lvh.plugins import default_registry

    for (group, name), cls in FAKES.items():
        default_registry.register(group, name, cls)
    lvh_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
