"""The lvh-oci hook plugin: its commands join the core's groups (or make them), and importing it
pulls in nothing heavy (``lvh --help`` stays fast)."""

from __future__ import annotations

import subprocess
import sys

import click
from lvh_oci.hooks import lvh_cli_commands


def test_commands_join_existing_groups():
    @click.group()
    def cli() -> None:
        pass

    @click.group()
    def images() -> None:
        """Build images (another plugin's group)."""

    @images.command()
    def build() -> None:
        pass

    cli.add_command(images)
    lvh_cli_commands(cli=cli)
    assert cli.get_command(None, "images") is images
    assert sorted(images.commands) == ["build", "pull", "push"]
    assert sorted(cli.get_command(None, "kernels").commands) == ["catalog", "pull", "push"]
    lvh_cli_commands(cli=cli)  # twice is harmless
    assert sorted(images.commands) == ["build", "pull", "push"]


def test_hook_module_is_light():
    code = ("import sys, lvh_oci.hooks, lvh_oci.cli; "
            "print(sorted(m for m in ('httpx', 'zstandard', 'rich.progress', 'lvh_oci.transfer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_lvh_help_lists_the_commands():
    from click.testing import CliRunner

    from tests.registry_fixture import lvh_cli

    r = CliRunner().invoke(lvh_cli(), ["kernels", "--help"])
    assert r.exit_code == 0 and "catalog" in r.output and "pull" in r.output
    r = CliRunner().invoke(lvh_cli(), ["images", "pull", "--help"])
    assert r.exit_code == 0 and "--platform" in r.output and "--insecure" in r.output
