"""The oci drivers inside real pipelines (the ``lvh`` command, the real engine and cache, a real
registry): a whole image and a kernel taken by reference, a child image derived from the pulled
one, everything cached on the second run; and artifacts pushed from one workdir and pulled into
another land in its cache as if built there, so the pipeline there builds nothing it got."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lvh_oci import transfer

from lvh.api import DiskArtifact
from tests import registry_fixture
from tests.registry_fixture import make_disk, make_kernel_dir

registry = registry_fixture.registry
pytestmark = pytest.mark.e2e

LVH = Path(sys.executable).parent / "lvh"


def lvh(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    if not LVH.exists():
        pytest.skip("the lvh console script is not installed beside this python")
    env = dict(os.environ, NO_COLOR="1")
    p = subprocess.run([str(LVH), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    if ok:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


def _statuses(out: str) -> dict[str, str]:
    summary = json.loads(out)
    return {s["id"]: s["status"] for s in summary["stages"]}


def test_pipeline_takes_image_and_kernel_by_reference_and_reuses_pulled_artifacts(registry, tmp_path):
    img = make_disk(tmp_path / "src", "base")
    transfer.push(DiskArtifact(root=img.parent, path=img, format="qcow2", size=64 * 1024**2),
                  f"{registry.host}/pipe/img:v1", name="base")
    transfer.push(transfer.kernel_from_dir(make_kernel_dir(tmp_path / "k", "6.1.3")),
                  f"{registry.host}/pipe/kernel:6.1-main", name="6.1")
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"""api_version: 1
images:
  - name: base
    disk: {{formatter: oci, ref: "{registry.host}/pipe/img:v1"}}
  - name: child
    parent: base
    disk: {{size: 128M}}
kernels:
  - {{name: k61, builder: oci, ref: "{registry.host}/pipe/kernel:6.1-main"}}
""")
    first = _statuses(lvh("pipeline", "run", str(conf), "--json", cwd=tmp_path).stdout)
    assert first == {"image:base/disk": "built", "image:child/disk": "built", "kernel:k61": "built"}
    data = tmp_path / "_data"
    assert (data / "images" / "base.qcow2").read_bytes() == img.read_bytes()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(data / "images" / "child.qcow2")],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["virtual-size"] == 128 * 1024**2
    assert Path(info["backing-filename"]).resolve() == (data / "images" / "base.qcow2").resolve()
    again = _statuses(lvh("pipeline", "run", str(conf), "--json", cwd=tmp_path).stdout)
    assert set(again.values()) == {"cached"}

    # Share what this workdir built: push the child (an overlay: flattened) and the kernel...
    lvh("images", "push", "child", f"{registry.host}/pipe/shared-child:v1", "--dir", str(data), cwd=tmp_path)
    lvh("kernels", "push", "k61", f"{registry.host}/pipe/shared-k61:v1", "--dir", str(data), cwd=tmp_path)
    # ...pull them into a fresh workdir: they land under the keys they were built with...
    other = tmp_path / "other"
    lvh("images", "pull", f"{registry.host}/pipe/shared-child:v1", "--dir", str(other), cwd=tmp_path)
    lvh("kernels", "pull", f"{registry.host}/pipe/shared-k61:v1", "--dir", str(other), cwd=tmp_path)
    child_key = (data / "images" / "child.qcow2").resolve().parent.name
    k61_key = (data / "kernels" / "k61").resolve().name
    assert (other / "cache" / "disk" / child_key / "artifact.json").is_file()
    assert (other / "cache" / "kernel" / k61_key / "artifact.json").is_file()
    flat = json.loads(subprocess.run(["qemu-img", "info", "--output=json",
                                      str(other / "images" / "child.qcow2")],
                                     check=True, capture_output=True, text=True).stdout)
    assert "backing-filename" not in flat and flat["virtual-size"] == 128 * 1024**2
    # ...so the same pipeline there reuses them: only the base image is fetched.
    there = _statuses(lvh("pipeline", "run", str(conf), "--workdir", str(other), "--json", cwd=tmp_path).stdout)
    assert there == {"image:base/disk": "built", "image:child/disk": "cached", "kernel:k61": "cached"}


def test_pipeline_with_unreachable_reference_fails_with_one_line(tmp_path):
    conf = tmp_path / "conf.yaml"
    conf.write_text("""api_version: 1
kernels:
  - {name: k, builder: oci, ref: "127.0.0.1:9/none/kernel:6.1-main"}
""")
    p = lvh("pipeline", "run", str(conf), cwd=tmp_path, ok=False)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "cannot reach registry 127.0.0.1:9" in p.stderr and "Traceback" not in p.stderr
