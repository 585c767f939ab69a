"""Report writers: a hook plugin of the core (``lvh.hooks: lvh-report``).

``lvh pipeline run --report FILE`` writes the pipeline summary as JSON; ``--junit FILE`` writes
JUnit XML (one testcase per stage and per run; a run whose guest command failed is a failure),
for CI systems that show test results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from lvh.api import hookimpl

_settings: dict[str, Any] = {}


@hookimpl
def lvh_configure(settings: dict[str, Any]) -> None:
    _settings.clear()
    _settings.update(report=settings.get("report"), junit=settings.get("junit"))


def _atomic_write(path: str, text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


def junit_xml(summary: dict[str, Any]) -> str:
    suite = ET.Element("testsuite", name="lvh", tests=str(len(summary["stages"])),
                       time=f"{summary['duration']:.3f}")
    failures = 0
    runs = {r["name"]: r for r in summary.get("runs", [])}
    for st in summary["stages"]:
        case = ET.SubElement(suite, "testcase", classname=f"lvh.{st['kind']}", name=st["id"],
                             time=f"{st['duration']:.3f}")
        run = runs.get(st["target"]) if st["kind"] == "run" else None
        if st["status"] == "failed":
            failures += 1
            ET.SubElement(case, "failure", message=(st.get("error") or "failed")[:500]).text = st.get("error") or ""
        elif run and run["exit_code"]:
            failures += 1
            ET.SubElement(case, "failure", message=f"{run['status']}: exit code {run['exit_code']}").text = (
                f"console log: {run.get('console_log')}")
        elif st["status"] in ("skipped",):
            ET.SubElement(case, "skipped")
    suite.set("failures", str(failures))
    return ET.tostring(suite, encoding="unicode")


@hookimpl
def lvh_pipeline_finished(summary: dict[str, Any]) -> None:
    if _settings.get("report"):
        _atomic_write(_settings["report"], json.dumps(summary, indent=2, default=str))
    if _settings.get("junit"):
        _atomic_write(_settings["junit"], junit_xml(summary))
