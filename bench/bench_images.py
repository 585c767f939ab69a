"""Image build benchmark: ``python -m bench.bench_images [--quick]`` (or ``python -m bench images``).

Measures, on this machine, in one run:
1. cold build of examples/quickstart.yaml's image ``base`` through lvh's fast path
   (mmdebstrap tree → chroot customizer → mke2fs -d → qcow2) vs upstream little-vm-helper's tool
   sequence for the same image (mmdebstrap tarball → guestfish -N/mkfs/tar-in → virt-customize);
2. a derived image adding a package: disk cost of the qcow2 overlay vs its delta and vs a full copy
   (what upstream does: cp --sparse + virt-customize --install), and the time of both;
3. an unchanged rebuild through the CLI (every stage cached).
Ratios are printed against the baselines measured in the same run. Targets (issue #3): fast path
≤ 0.5× upstream, unchanged rebuild ≤ 1 s, derived image ≤ its delta + 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
DERIVED_PACKAGES = ["python3-minimal"]


def used(p: Path) -> int:
    """Bytes a file really takes on disk (sparse files and overlays count only what they hold)."""
    return p.stat().st_blocks * 512


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def sh(*argv: str, env: dict[str, str] | None = None) -> float:
    t = time.monotonic()
    subprocess.run(list(argv), check=True, env=dict(os.environ, **(env or {})), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.monotonic() - t


def quickstart_image() -> dict[str, Any]:
    conf = yaml.safe_load(QUICKSTART.read_text())
    return next(im for im in conf["images"] if im["name"] == "base")


def fast_path(work: Path, image: dict[str, Any], derived: bool) -> dict[str, Any]:
    from lvh.config import load_data
    from lvh.engine import Engine

    images = [image]
    if derived:
        images.append({"name": "child", "parent": image["name"], "packages": DERIVED_PACKAGES})
    conf = {"api_version": 1, "images": images}
    (work / "conf.yaml").write_text(yaml.safe_dump(conf))
    cfg = load_data(conf, source=str(work / "conf.yaml"), base_dir=work, workdir=work / "data")
    t = time.monotonic()
    summary = Engine(cfg, workdir=work / "data", only=[image["name"]]).run()
    base_t = time.monotonic() - t
    out: dict[str, Any] = {"base_s": base_t, "stages": {s["id"]: round(s["duration"], 2) for s in summary["stages"]}}
    base = (work / "data" / "images" / f"{image['name']}.qcow2").resolve()
    out["base_bytes"] = used(base)
    if derived:
        cfg = load_data(conf, source=str(work / "conf.yaml"), base_dir=work, workdir=work / "data")
        t = time.monotonic()
        Engine(cfg, workdir=work / "data").run()
        out["child_s"] = time.monotonic() - t
        child = (work / "data" / "images" / "child.qcow2").resolve()
        out["child_bytes"] = used(child)
        flat = work / "child-flat.qcow2"
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(child), str(flat)], check=True)
        out["child_flat_bytes"] = used(flat)
        flat.unlink()
    # unchanged rebuild, through the CLI as a user runs it
    lvh = str(Path(sys.executable).with_name("lvh"))
    t = time.monotonic()
    subprocess.run([lvh, "-q", "pipeline", "run", str(work / "conf.yaml"), "--workdir", str(work / "data")],
                   check=True, stdout=subprocess.DEVNULL)
    out["unchanged_s"] = time.monotonic() - t
    return out


def upstream_sequence(work: Path, image: dict[str, Any], derived: bool) -> dict[str, Any]:
    """What little-vm-helper runs for the same image (its Go code shells out to these tools)."""
    r, d = image["rootfs"], image["disk"]
    env = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
    tar, img = work / "base.tar", work / "base.img"
    out: dict[str, Any] = {}
    t0 = time.monotonic()
    out["mmdebstrap_s"] = sh("mmdebstrap", f"--variant={r.get('variant', 'important')}",
                             "--include=" + ",".join(r.get("packages") or []), r["suite"], str(tar),
                             r.get("mirror", "http://deb.debian.org/debian"))
    out["guestfish_s"] = sh("guestfish", "-N", f"{img}=disk:{d.get('size', '8G')}", "--", "mkfs", "ext4", "/dev/sda",
                            ":", "mount", "/dev/sda", "/", ":", "tar-in", str(tar), "/", env=env)
    tar.unlink()
    args: list[str] = []
    for c in image.get("customize") or []:
        for a in c["actions"]:
            if a["type"] == "set-hostname":
                args += ["--hostname", a["hostname"]]
            elif a["type"] == "append-line":
                args += ["--append-line", f"{a['file']}:{a['line']}"]
            elif a["type"] == "run-command":
                args += ["--run-command", a["cmd"]]
            else:
                raise SystemExit(f"bench: no upstream equivalent wired for action {a['type']}")
    out["virt_customize_s"] = sh("virt-customize", "-a", str(img), *args, env=env) if args else 0.0
    out["base_s"] = time.monotonic() - t0
    out["base_bytes"] = used(img)
    if derived:
        child = work / "child.img"
        t = time.monotonic()
        sh("cp", "--sparse=always", str(img), str(child))
        sh("virt-customize", "-a", str(child), "--install", ",".join(DERIVED_PACKAGES), env=env)
        out["child_s"] = time.monotonic() - t
        out["child_bytes"] = used(child)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_images", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the derived images (about 2 minutes less)")
    ap.add_argument("--json", action="store_true", help="also print the raw numbers as JSON")
    args = ap.parse_args(argv if argv is not None else sys.argv[1:])
    missing = [t for t in ("mmdebstrap", "mke2fs", "qemu-img", "qemu-storage-daemon", "guestfish", "virt-customize")
               if not shutil.which(t) and not shutil.which(t, path="/usr/sbin:/sbin")]
    if missing:
        print(f"error: missing host tools: {', '.join(missing)} (make deps)", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("error: the fast path (root mode) needs root here", file=sys.stderr)
        return 2
    image = quickstart_image()
    derived = not args.quick
    with tempfile.TemporaryDirectory(prefix="lvh-bench-") as tmp:
        work = Path(tmp)
        (work / "fast").mkdir()
        (work / "up").mkdir()
        print(f"quickstart image: {image['rootfs']['suite']} {image['rootfs'].get('variant')} + "
              f"{', '.join(image['rootfs'].get('packages') or [])}; disk {image['disk'].get('size')}", flush=True)
        up = upstream_sequence(work / "up", image, derived)
        print(f"upstream sequence: {up['base_s']:.1f} s (mmdebstrap {up['mmdebstrap_s']:.1f} + guestfish tar-in "
              f"{up['guestfish_s']:.1f} + virt-customize {up['virt_customize_s']:.1f})", flush=True)
        fast = fast_path(work / "fast", image, derived)
        steps = ", ".join(f"{k.split('/')[-1]} {v}" for k, v in fast["stages"].items())
        print(f"fast path:         {fast['base_s']:.1f} s ({steps})")
        print(f"  ratio fast/upstream = {fast['base_s'] / up['base_s']:.2f}x (target <= 0.5x)")
        print(f"  base image on disk: fast {mib(fast['base_bytes'])} vs upstream raw {mib(up['base_bytes'])}")
        if derived:
            delta = max(1, fast["child_flat_bytes"] - fast["base_bytes"])
            print(f"derived image (+{', '.join(DERIVED_PACKAGES)}): fast {fast['child_s']:.1f} s, "
                  f"upstream cp+virt-customize {up['child_s']:.1f} s ({fast['child_s'] / up['child_s']:.2f}x)")
            print(f"  overlay {mib(fast['child_bytes'])}; its delta (flattened child - base) {mib(delta)}: "
                  f"{fast['child_bytes'] / delta:.2f}x its delta (target <= 1.10x)")
            print(f"  vs a full copy: upstream's child {mib(up['child_bytes'])} "
                  f"({fast['child_bytes'] / up['child_bytes']:.3f}x), flattened child {mib(fast['child_flat_bytes'])}")
        print(f"unchanged rebuild (lvh pipeline run, all cached): {fast['unchanged_s']:.2f} s (target <= 1 s)")
        if args.json:
            print(json.dumps({"fast": fast, "upstream": up}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
