"""Kernel builds: what lvh's cache saves, with baselines measured in the same run, on the small
test kernel (tests/kernels.py: linux-source-6.1, tinyconfig + groups; built once, ~6 min):

- a cache hit (compute the key: configure in the config dir + digest the source; no make) vs.
  kbuild's own up-to-date check (``make -j2 bzImage modules`` in the kept, complete build tree);
- the small kernel's tarball digest (sha256 of 138 MB) vs. reading the file (``cat > /dev/null``).

``python -m bench kernel`` (builds the small kernel first if this machine has none).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from bench import best

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    from tests.kernels import SMALL_KERNEL_NAME, SMALL_KERNEL_OPTIONS, SOURCE, build_cached, cache_root

    root = cache_root() / "kernel"
    kernel = build_cached(SMALL_KERNEL_OPTIONS, SMALL_KERNEL_NAME, root)  # warm (or build once)
    build_dir = next((root / "state" / "build").glob(f"*-x86_64-{SMALL_KERNEL_NAME}"))
    src = next((root / "state" / "src").glob("tar-*"))

    def hit() -> None:
        # a fresh process: no in-process memo, the key is computed from scratch
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "from tests.kernels import small_kernel; small_kernel()", str(ROOT)],
                       check=True, capture_output=True)

    def kbuild_noop() -> None:
        subprocess.run(["make", "-C", str(src), f"O={build_dir}", "ARCH=x86_64", "-j2", "bzImage", "modules"],
                       check=True, capture_output=True)

    def digest() -> None:
        h = hashlib.sha256()
        with open(SOURCE, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)

    def cat() -> None:
        subprocess.run(["sh", "-c", f"cat {SOURCE} > /dev/null"], check=True)

    t_hit, t_make = best(hit), best(kbuild_noop)
    t_digest, t_cat = best(digest), best(cat)
    print(f"kernel {kernel.version}: cache hit {t_hit:.2f}s vs kbuild up-to-date make {t_make:.2f}s "
          f"-> {t_make / t_hit:.1f}x")
    print(f"source digest {t_digest:.2f}s vs cat {t_cat:.2f}s -> {t_digest / t_cat:.2f}x of a plain read")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
