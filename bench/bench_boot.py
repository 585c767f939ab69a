"""Boot benchmarks of the QEMU runners (run: ``python -m bench.bench_boot``).

Prints, each against a baseline measured in the same run:
- boot-to-exit of ``true`` in exec mode via ``lvh run`` vs. the same QEMU command line run by hand
  (lvh's own overhead; target <= 1.10x), for microvm;
- microvm vs. the pc machine (both via lvh);
- ``lvh --help`` start-up time vs. ``python -c pass`` (target <= 0.3 s).
Medians of ``--runs`` runs. Needs qemu-system-x86_64, busybox-static, mmdebstrap (first run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LVH = [sys.executable, "-m", "lvh.cli.main"]
LVH_BIN = Path(sys.executable).with_name("lvh")


def timed(fn: Callable[[], object], runs: int) -> float:
    return interleaved([fn], runs)[0]


def interleaved(fns: list[Callable[[], object]], runs: int) -> list[float]:
    """Medians of ``runs`` runs of each function, alternating them so that a change in the
    host's load (shared CI machines) hits every variant alike."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            samples[i].append(time.perf_counter() - t0)
    return [statistics.median(s) for s in samples]


def make_image(tmp: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.runner_fixtures import minbase_tarball

    root = tmp / "root"
    root.mkdir()
    subprocess.run(["tar", "-C", str(root), "-xf", str(minbase_tarball())], check=True)
    img = tmp / "bench.raw"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(root), str(img), "600M"], check=True)
    shutil.rmtree(root)
    return img


def hand_argv(runner: str, image: Path, kernel: Path, mem: str, state: Path) -> list[str]:
    """The exact command line lvh starts (its per-run initramfs written), to run by hand."""
    from lvh_qemu import initramfs

    from lvh.api import DiskArtifact, KernelArtifact, RunSpec, parse_size
    from lvh.plugins import load_driver
    from lvh.testing import make_context

    r = load_driver("lvh.runner", runner, {})
    ctx = make_context(state, real=True)
    spec = RunSpec(name="bench", image=DiskArtifact(root=image.parent, path=image, format="raw"),
                   kernel=KernelArtifact(root=kernel.parent, image=kernel), command="true", cpus=1,
                   memory=parse_size(mem), state_dir=state / "run")
    plan = r._plan(ctx, spec, dry=False)  # type: ignore[attr-defined]
    plan.rundir.mkdir(parents=True, exist_ok=True)
    initramfs.run_initramfs(ctx, plan.initrd_base, plan.initrd, settings=plan.settings, command="true")
    return plan.argv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", type=Path, default=None,
                    help="bzImage (default: the test suite's small kernel, built once and cached)")
    ap.add_argument("--image", type=Path, help="ext4 image (default: a minbase Debian made here)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mem", default="512M")
    a = ap.parse_args(argv)
    if a.kernel is None:
        from tests.kernels import small_kernel

        a.kernel = small_kernel().image
    if not a.kernel.exists():
        sys.exit(f"no kernel at {a.kernel}; pass --kernel bzImage")
    tmp = Path(tempfile.mkdtemp(prefix="lvh-bench-"))
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp / "cache"))
    try:
        image = a.image or make_image(tmp)
        print(f"kernel {a.kernel}, image {image}, {a.runs} runs each, medians; TCG" if "vmx" not in
              Path("/proc/cpuinfo").read_text() else "KVM host")

        def lvh_run(runner: str) -> None:
            r = subprocess.run([*LVH, "-q", "run", "--runner", runner, "--image", str(image), "--kernel",
                                str(a.kernel), "--mem", a.mem, "--cpu", "1", "--", "true"], env=env,
                               capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"lvh run failed ({r.returncode}): {r.stderr[-2000:]}")

        lvh_run("microvm")  # warm the initramfs cache
        os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]
        argv = hand_argv("microvm", image, a.kernel, a.mem, tmp / "hand")

        def by_hand() -> None:
            subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)

        hand, via, pc = interleaved([by_hand, lambda: lvh_run("microvm"), lambda: lvh_run("qemu")], a.runs)
        print(f"exec `true`, microvm: qemu by hand {hand:.2f}s, via lvh {via:.2f}s -> ratio {via / hand:.2f} "
              f"(target <= 1.10)")
        print(f"exec `true` via lvh: microvm {via:.2f}s, pc {pc:.2f}s -> pc/microvm {pc / via:.2f}")
        py = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), a.runs)
        helpcmd = [str(LVH_BIN)] if LVH_BIN.exists() else LVH
        hlp = timed(lambda: subprocess.run([*helpcmd, "--help"], check=True, capture_output=True), a.runs)
        print(f"lvh --help: {hlp:.3f}s (python -c pass {py:.3f}s; target <= 0.3s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
