"""Figures for issue 3: the download path against curl, and its memory as files grow.

    python benchmarks/bench_download.py [--mib 200]

Serves a random file from the local fake server (terrapipe.testing.servers, 127.0.0.1) and measures
  - terrapipe's download (requests streaming, resume bookkeeping, size check) against `curl -o` of the
    same file in the same run (best of 3 each); target: terrapipe's speed >= 0.8 x curl's; and the
    same with the published MD5 (x-goog-hash) verified, against `curl` followed by `md5sum`;
  - peak RSS of a process downloading a file of --mib/10 and of --mib MiB; target: within 1.2x.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import report

CHILD = """
import sys, resource
from pathlib import Path
from terrapipe.sources.transfer import download
download(sys.argv[1], Path(sys.argv[2]), cache_dir=Path(sys.argv[3]), show_progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _random_file(path: Path, mib: int) -> None:
    with open(path, "wb") as sink:
        for _ in range(mib):
            sink.write(os.urandom(1 << 20))


def _best(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200)
    args = parser.parse_args()

    from terrapipe.sources.transfer import download
    from terrapipe.testing.servers import FakeHTTPServer

    root = Path(tempfile.mkdtemp(prefix="terrapipe-download-"))
    served = root / "served"
    served.mkdir()
    small, big = max(1, args.mib // 10), args.mib
    _random_file(served / "big.bin", big)
    _random_file(served / "small.bin", small)
    with FakeHTTPServer(served, publish_md5=True) as server:
        url = f"{server.url}/big.bin"

        def ours():
            out = root / "ours.bin"
            download(url, out, cache_dir=root / "cache", show_progress=False)
            out.unlink()

        def curl(verify: bool = False):
            subprocess.run(["curl", "-sS", "-o", str(root / "curl.bin"), url], check=True)
            if verify:  # what a script would do to check the published checksum
                subprocess.run(["md5sum", str(root / "curl.bin")], check=True, capture_output=True)
            (root / "curl.bin").unlink()

        size = (served / "big.bin").stat().st_size
        server.publish_md5 = False
        curl_s, plain_s = _best(curl), _best(ours)
        server.publish_md5 = True
        verified_s, curl_md5_s = _best(ours), _best(lambda: curl(verify=True))
        print(f"{big} MiB: curl {curl_s:.2f} s ({size / curl_s / 2**20:.0f} MiB/s); terrapipe {plain_s:.2f} s "
              f"({size / plain_s / 2**20:.0f} MiB/s), {verified_s:.2f} s with the published MD5 verified")
        report("download path speed relative to curl (stream, resume bookkeeping, size check)", curl_s / plain_s, "x",
               0.8, "higher")
        print(f"with verification: curl + md5sum {curl_md5_s:.2f} s, terrapipe (MD5 hashed while receiving) {verified_s:.2f} s")
        report("verified download speed relative to curl + md5sum", curl_md5_s / verified_s, "x", 0.8, "higher")

        peaks = {}
        for name in ("small.bin", "big.bin"):
            out = subprocess.run([sys.executable, "-c", CHILD, f"{server.url}/{name}", str(root / f"child-{name}"),
                                  str(root / "cache")], check=True, capture_output=True, text=True).stdout
            peaks[name] = int(out.split()[-1]) / 1024
        print(f"peak RSS: {small} MiB file {peaks['small.bin']:.0f} MiB, {big} MiB file {peaks['big.bin']:.0f} MiB")
        report(f"peak memory ratio, {big} MiB vs {small} MiB download", peaks["big.bin"] / peaks["small.bin"], "x",
               1.2, "lower")


if __name__ == "__main__":
    main()
