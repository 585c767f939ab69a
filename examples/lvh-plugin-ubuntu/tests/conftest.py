"""Fixtures: lvh's test helpers (``lvh_context``, ``fake_executor``, ``lvh_drivers``…) and a
stand-in for lvh's mmdebstrap rootfs driver, with the same option set: tests of the mapping
(which options the ubuntu provider hands its base driver) should not depend on how the installed
mmdebstrap driver spells its command line."""

from __future__ import annotations

from typing import Any

import pytest

from lvh import api
from lvh.api import fields

pytest_plugins = ["lvh.testing"]


class StandInOptions(api.Schema):
    suite = fields.Str(required=True)
    mirror = fields.Str(load_default=None)
    variant = fields.Str(load_default="minbase")
    components = fields.List(fields.Str(), load_default=lambda: ["main"])
    architecture = fields.Str(load_default=None)
    keyring = fields.List(fields.Str(), load_default=list)
    packages = fields.List(fields.Str(), load_default=list)
    hooks = fields.Dict(load_default=dict)
    format = fields.Str(load_default="auto")
    mode = fields.Str(load_default="auto")
    bootable = fields.Bool(load_default=False)


class StandInMmdebstrap(api.RootfsProvider):
    name = "mmdebstrap"
    Options = StandInOptions

    def command(self, ctx: api.Context) -> list[str]:
        o: dict[str, Any] = self.options
        argv = ["mmdebstrap", f"--variant={o['variant']}", f"--components={','.join(o['components'])}"]
        if o["architecture"]:
            argv.append(f"--architectures={o['architecture']}")
        if o["packages"]:
            argv.append(f"--include={','.join(o['packages'])}")
        argv += [f"--keyring={k}" for k in o["keyring"]]
        out = str(ctx.out / "rootfs.tar") if ctx.out else "OUT/rootfs.tar"
        return [*argv, o["suite"], out, *([o["mirror"]] if o["mirror"] else [])]

    def key_material(self, ctx: api.Context) -> dict[str, Any]:
        return {"mmdebstrap": "stand-in"}

    def describe(self, ctx: api.Context, *inputs: api.Artifact | None) -> list[list[str]]:
        return [self.command(ctx)]

    def build(self, ctx: api.Context) -> api.RootfsArtifact:
        argv = self.command(ctx)
        ctx.run(*argv)
        return api.RootfsArtifact(root=ctx.out, path=ctx.out / "rootfs.tar", format="tar")


@pytest.fixture
def standin(lvh_drivers):
    """Register the stand-in as ``lvh.rootfs: mmdebstrap`` for this test."""
    return lvh_drivers.register("lvh.rootfs", "mmdebstrap", StandInMmdebstrap)
