"""OCI transfers against a local registry (Debian's docker-registry on 127.0.0.1), with baselines
measured in the same run:

- pull of an image (lvh's format: zstd tar layer, digest-verified, extracted sparse into the
  cache) vs. ``curl`` of the same blob piped into ``zstd -d`` (no verification, no tar);
- push vs. ``zstd -T0`` of the image followed by ``curl`` upload of the result;
- multi-threaded vs. single-threaded zstd compression of the image (zstandard);
- a pull that finds its artifact in the cache (one manifest request) vs. one ``curl`` of the manifest.

``python -m bench oci`` (``LVH_BENCH_MB``: incompressible MiB in the 1 GiB test image, default 256).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import best


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from lvh_oci import transfer

    from lvh.api import DiskArtifact
    from tests.registry_fixture import REGISTRY_BIN, start_registry, stop_registry

    for tool in ("curl", "zstd", "qemu-img"):
        if not shutil.which(tool):
            print(f"skip: {tool} is not installed")
            return 0
    if REGISTRY_BIN is None:
        print("skip: docker-registry is not installed")
        return 0
    mb = int(os.environ.get("LVH_BENCH_MB", "256"))
    tmp = Path(tempfile.mkdtemp(prefix="lvh-bench-oci-"))
    server = start_registry(tmp / "reg")
    try:
        # A 1 GiB raw disk: `mb` MiB of random data, a text-like region, and holes.
        raw = tmp / "src" / "disk.raw"
        raw.parent.mkdir()
        rng = random.Random(7)
        with raw.open("wb") as fh:
            fh.truncate(1024**3)
            for i in range(mb):
                fh.seek(i * 2 * 1024**2)
                fh.write(rng.randbytes(1024**2))
            fh.seek(900 * 1024**2)
            fh.write(b"kernel testing with lvh " * (4 * 1024**2 // 24))
        img = tmp / "src" / "base.qcow2"
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(img)], check=True)
        raw.unlink()
        size = img.stat().st_size
        art = DiskArtifact(root=img.parent, path=img, format="qcow2", size=1024**3, key="b" * 64)
        print(f"image: {size / 1024**2:.0f} MiB qcow2 ({mb} MiB incompressible), registry {server.host}")

        # -- compression: threads ----------------------------------------------------------------
        import zstandard

        def comp(threads: int) -> None:
            c = zstandard.ZstdCompressor(level=3, threads=threads)
            with open(img, "rb") as fi, open(tmp / "x.zst", "wb") as fo:
                c.copy_stream(fi, fo, read_size=1 << 20, write_size=1 << 20)

        t1 = best(lambda: comp(0), 2)
        tn = best(lambda: comp(-1), 2)
        print(f"zstd level 3: 1 thread {t1:.2f}s, all threads {tn:.2f}s  → speed-up {t1 / tn:.2f}x "
              f"({os.cpu_count()} cpus)")

        # -- push vs zstd CLI + curl upload --------------------------------------------------------
        n = [0]

        def push() -> None:
            n[0] += 1
            transfer.push(art, f"{server.host}/bench/img{n[0]}:v1", name="base")

        t_push = best(push, 2)

        def base_push() -> None:
            n[0] += 1
            subprocess.run(["zstd", "-q", "-f", "-T0", "-3", str(img), "-o", str(tmp / "b.zst")], check=True)
            d = "sha256:" + hashlib.sha256((tmp / "b.zst").read_bytes()).hexdigest()
            loc = subprocess.run(["curl", "-sSf", "-X", "POST", "-D", "-", "-o", "/dev/null",
                                  f"{server.url}/v2/bench/base{n[0]}/blobs/uploads/"],
                                 check=True, capture_output=True, text=True).stdout
            url = next(ln.split(" ", 1)[1].strip() for ln in loc.splitlines() if ln.lower().startswith("location:"))
            subprocess.run(["curl", "-sSf", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                            "--data-binary", f"@{tmp / 'b.zst'}", f"{url}&digest={d}"], check=True,
                           capture_output=True)

        t_bpush = best(base_push, 2)
        print(f"push: lvh {t_push:.2f}s, zstd -T0 + curl {t_bpush:.2f}s  → ratio {t_push / t_bpush:.2f}")

        # -- pull vs curl | zstd -d ------------------------------------------------------------------
        ref = f"{server.host}/bench/img1:v1"
        layer = transfer.resolve(transfer.client_for(transfer.parse_reference(ref), transfer.Options()),
                                 transfer.parse_reference(ref), None).manifest["layers"][0]["digest"]
        w = [0]

        def pull() -> None:
            w[0] += 1
            transfer.pull(ref, "disk", tmp / f"w{w[0]}")

        t_pull = best(pull, 3)

        def base_pull() -> None:
            subprocess.run(f"curl -sSf {server.url}/v2/bench/img1/blobs/{layer} | zstd -d -q -o {tmp / 'c.tar'} -f",
                           shell=True, check=True)

        t_bpull = best(base_pull, 3)
        print(f"pull: lvh {t_pull:.2f}s, curl | zstd -d {t_bpull:.2f}s  → ratio {t_pull / t_bpull:.2f} "
              f"({size / 1024**2 / t_pull:.0f} MiB/s)")

        # -- a cached pull ------------------------------------------------------------------------
        t_cached = best(lambda: transfer.pull(ref, "disk", tmp / "w1"), 5)
        t_curl = best(lambda: subprocess.run(
            ["curl", "-sSf", "-o", "/dev/null", "-H", "Accept: application/vnd.oci.image.manifest.v1+json",
             f"{server.url}/v2/bench/img1/manifests/v1"], check=True), 5)
        print(f"cached pull: lvh {t_cached * 1000:.0f} ms, one curl of the manifest {t_curl * 1000:.0f} ms "
              f"→ ratio {t_cached / t_curl:.2f}")
    finally:
        stop_registry(server.proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
