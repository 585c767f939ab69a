"""``lvh doctor``: what each installed driver needs from the host, and whether KVM really works."""

from __future__ import annotations

import json
from typing import Any

import click

from lvh.cli.main import stdout_console


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check host tools for every installed driver, and hardware acceleration."""
    from lvh.api import DRIVER_GROUPS
    from lvh.host import host_info
    from lvh.plugins import list_plugins

    host = host_info()
    rows: list[dict[str, Any]] = []
    for info in list_plugins(list(DRIVER_GROUPS)):
        if info.error:
            rows.append({"driver": f"{info.kind}:{info.name}", "requirement": "(load)", "found": False,
                         "detail": info.error, "hint": "reinstall the distribution " + info.distribution})
            continue
        from lvh.plugins import driver_class

        group = next(g for g, c in DRIVER_GROUPS.items() if c.kind == info.kind)
        cls = driver_class(group, info.name)
        try:
            reqs = cls.check(host)
        except Exception as e:  # a broken check must not hide the others
            rows.append({"driver": f"{info.kind}:{info.name}", "requirement": "(check)", "found": False,
                         "detail": f"{type(e).__name__}: {e}", "hint": None})
            continue
        for r in reqs:
            rows.append({"driver": f"{info.kind}:{info.name}", "requirement": r.name, "found": r.found,
                         "detail": r.detail, "hint": r.hint})
    accel = {"kvm": host.kvm, "reason": host.kvm_reason,
             "verdict": "KVM works: hardware acceleration" if host.kvm else
             f"KVM not usable ({host.kvm_reason}): VMs will run under TCG (software emulation, slower)"}
    missing = [r for r in rows if not r["found"]]
    if as_json:
        click.echo(json.dumps({"host": {"arch": host.arch, "cpus": host.cpus}, "acceleration": accel,
                               "requirements": rows, "ok": not missing}, indent=2))
    else:
        from rich.table import Table

        con = stdout_console()
        t = Table(box=None, pad_edge=False)
        for col in ("driver", "needs", "", "detail / how to install"):
            t.add_column(col)
        for r in rows:
            t.add_row(r["driver"], r["requirement"], "[green]ok[/]" if r["found"] else "[red]missing[/]",
                      r["detail"] if r["found"] else (r["hint"] or r["detail"]))
        con.print(t)
        con.print(f"host: {host.arch}, {host.cpus} cpus")
        con.print(("[green]" if host.kvm else "[yellow]") + accel["verdict"] + "[/]")
        if missing:
            con.print(f"[red]{len(missing)} requirement(s) missing[/] — drivers that need them will fail")
    ctx.exit(1 if missing else 0)
