"""The ``lvh`` entry point: global options, logging set-up, lazy subcommands, error reporting.

User errors print one line (``error: …``) and a hint, and exit 2; stage failures exit 1; a run's
guest command exit code is lvh's exit code. No traceback unless ``-vv``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from lvh import __version__

# name -> (module, attribute, short help). Imported only when used, so `lvh --help` is fast.
LAZY: dict[str, tuple[str, str, str]] = {
    "pipeline": ("lvh.cli.pipeline", "pipeline", "Validate, plan and run pipeline files."),
    "run": ("lvh.cli.run", "run", "Boot an image and kernel; with -- CMD, run CMD and exit with its code."),
    "ssh": ("lvh.cli.run", "ssh", "Open a shell in a running VM."),
    "stop": ("lvh.cli.run", "stop", "Stop a daemonized VM."),
    "images": ("lvh.cli.images", "images", "Build images from images.json (upstream's format)."),
    "kernels": ("lvh.cli.kernels", "kernels", "Manage and build kernels from kernels.json."),
    "plugins": ("lvh.cli.plugins", "plugins", "List installed drivers and hook plugins."),
    "doctor": ("lvh.cli.doctor", "doctor", "Check host tools and whether KVM really works."),
    "cache": ("lvh.cli.cache", "cache", "List and garbage-collect the artifact cache."),
}
ALIASES = {"kernel": "kernels", "k": "kernels", "image": "images"}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use, plus hook-contributed commands."""

    _hooks_loaded = False
    _hook_error: Exception | None = None

    def _load_hook_commands(self) -> None:
        if self._hooks_loaded:
            return
        self._hooks_loaded = True
        from lvh.plugins import PluginError, hooks

        try:
            hooks().lvh_cli_commands(cli=self)
        except PluginError as e:
            # `lvh plugins list` and `lvh doctor` must still work to diagnose a broken plugin;
            # anything that needs the hooks raises this again when it configures them.
            self._hook_error = e

    def _lazy(self, name: str) -> click.Command | None:
        if name not in LAZY:
            return None
        mod, attr, _ = LAZY[name]
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                return None
            raise
        cmd = getattr(module, attr)
        self.add_command(cmd, name)
        return cmd

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_hook_commands()
        names = set(self.commands)
        for name, (mod, _a, _h) in LAZY.items():
            if importlib.util.find_spec(mod) is not None:
                names.add(name)
        return sorted(names)

    def get_command(self, ctx: click.Context | None, cmd_name: str) -> click.Command | None:
        name = ALIASES.get(cmd_name, cmd_name)
        if name in self.commands:
            return self.commands[name]
        cmd = self._lazy(name)
        if not self._hooks_loaded:  # hooks may add commands, or subcommands to a lazy group
            self._load_hook_commands()
            cmd = self.commands.get(name)
        if cmd is None and self._hook_error is not None:
            raise self._hook_error
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                cmd = self.commands[name]
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(limit=formatter.width - 6 - len(name))))
            else:
                rows.append((name, LAZY[name][2]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class LazyConsole:
    """A rich Console on stderr, made on first use: `lvh run -q -- CMD` never pays for rich."""

    _console: Any = None

    @property
    def is_terminal(self) -> bool:
        return sys.stderr.isatty()

    def real(self) -> Any:
        """The rich Console itself (for rich objects that need one, like a Progress)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


def stdout_console() -> Any:
    """A rich Console on stdout; wide when stdout is not a terminal, so tables don't wrap in logs."""
    from rich.console import Console

    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def setup_logging(verbose: int, quiet: bool, log_json: str | None, console: Any = None) -> None:
    """Sinks for the CLI: stderr (INFO; DEBUG with -v; WARNING with -q) and an optional JSON file."""
    from loguru import logger

    logger.remove()
    level = "WARNING" if quiet else ("DEBUG" if verbose else "INFO")

    def sink(msg: Any) -> None:
        if console is not None:
            console.print(msg.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
        else:
            sys.stderr.write(msg)

    fmt = "<dim>{time:HH:mm:ss}</dim> <level>{level: <7}</level> {message}"
    if verbose:
        fmt = "<dim>{time:HH:mm:ss.SSS}</dim> <level>{level: <7}</level> <dim>{name}</dim> {message}"
    logger.add(sink, level=level, format=fmt, colorize=bool(console is not None and console.is_terminal))
    if log_json:
        logger.add(log_json, level="DEBUG", serialize=True)
    logger.enable("")  # lvh and every plugin module


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="lvh")
@click.option("-v", "--verbose", count=True, help="More output: -v debug logs, -vv tracebacks too.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.option("--log-json", type=click.Path(dir_okay=False), help="Also write every log record as JSON lines.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, log_json: str | None) -> None:
    """lvh — build throw-away Linux VM images and kernels and boot them fast.

    Start with `lvh pipeline run examples/quickstart.yaml`; `lvh doctor` checks the host.
    """
    ctx.ensure_object(dict)
    ctx.obj.update(verbose=verbose, quiet=quiet, log_json=log_json)
    console = LazyConsole()
    ctx.obj["console"] = console
    setup_logging(verbose, quiet, log_json, console)


def configure_hooks(ctx: click.Context, **settings: Any) -> None:
    """Tell hook plugins the CLI's settings (called by commands that do work)."""
    from lvh.plugins import hooks

    obj = ctx.find_root().obj or {}
    console = obj.get("console")
    base = {"verbose": obj.get("verbose", 0), "json": False, "tty": bool(console and console.is_terminal),
            "report": None, "junit": None, "console": console, "quiet": obj.get("quiet", False)}
    base.update(settings)
    hooks().lvh_configure(settings=base)


def report_error(e: BaseException, verbose: int = 0) -> int:
    from lvh.api import LvhError

    if isinstance(e, LvhError):
        click.echo(f"error: {e.message}", err=True)
        if e.hint:
            click.echo(f"hint: {e.hint}", err=True)
        if verbose >= 2 and e.__cause__ is not None:
            import traceback

            traceback.print_exception(e.__cause__)
        return e.exit_code
    import traceback

    if verbose >= 2:
        traceback.print_exception(e)
    else:
        where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        loc = f" at {where.filename}:{where.lineno}" if where else ""
        click.echo(f"error: internal error: {type(e).__name__}: {e}{loc}", err=True)
        click.echo("hint: this is a bug in lvh or a plugin; rerun with -vv for the traceback and report it",
                   err=True)
    return 1


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    verbose = sum(a.count("v") for a in (argv or sys.argv[1:]) if a.startswith("-v") and set(a[1:]) == {"v"})
    verbose += 1 if "--verbose" in (argv or sys.argv[1:]) else 0
    try:
        rc = cli.main(args=argv, prog_name="lvh", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except BaseException as e:
        if isinstance(e, SystemExit):
            raise
        sys.exit(report_error(e, verbose))
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
