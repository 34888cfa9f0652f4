"""Put Prometheus's promtool in the virtualenv's bin/ (the alert rule checks in make test).

No promtool on PyPI: it comes from Debian's `prometheus` package, downloaded with
`apt-get download` (no install, nothing else on the system changes) and unpacked with
`dpkg-deb -x` in a temporary directory. Its promtool is a static binary. Skipped when
bin/promtool is already there and runs.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

PACKAGE = "prometheus"

BY_HAND = f"""\
promtool could not be installed from the Debian package {PACKAGE!r}. Put it there by hand,
either from a Debian/Ubuntu package:
    apt-get download {PACKAGE} && dpkg-deb -x {PACKAGE}_*.deb out
    cp out/usr/bin/promtool {{target}}
or from a release tarball (https://github.com/prometheus/prometheus/releases):
    tar xzf prometheus-<version>.linux-amd64.tar.gz
    cp prometheus-<version>.linux-amd64/promtool {{target}}
"""


def works(path: Path) -> str | None:
    """promtool's version line, or None when `path` is missing or does not run."""
    if not path.is_file():
        return None
    try:
        done = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    if done.returncode != 0:
        return None
    out = (done.stdout + done.stderr).strip()
    return out.splitlines()[0] if out else ""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def fail(why: str, target: Path) -> int:
    print(f"install_promtool: {why}\n\n{BY_HAND.format(target=target)}", file=sys.stderr)
    return 1


def download(tmp: Path) -> Path | str:
    """The downloaded .deb, or why there is none."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return "apt-get and dpkg-deb are not on PATH (not a Debian-based system?)"
    got = run("apt-get", "download", "-q", PACKAGE, cwd=tmp)
    if got.returncode != 0 and os.geteuid() == 0:
        # A fresh container has no package lists yet.
        updated = run("apt-get", "update", "-qq", cwd=tmp)
        if updated.returncode != 0:
            return f"`apt-get update` failed:\n{updated.stderr.strip()}"
        got = run("apt-get", "download", "-q", PACKAGE, cwd=tmp)
    if got.returncode != 0:
        hint = "" if os.geteuid() == 0 else " (as root it would run `apt-get update` first)"
        return f"`apt-get download {PACKAGE}` failed{hint}:\n{got.stderr.strip()}"
    debs = sorted(tmp.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        return f"`apt-get download {PACKAGE}` left no {PACKAGE}_*.deb"
    return debs[-1]


def main() -> int:
    target = Path(sysconfig.get_path("scripts")) / "promtool"
    version = works(target)
    if version is not None:
        print(f"promtool already at {target}: {version}", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory(prefix="promtool-") as name:
        tmp = Path(name)
        deb = download(tmp)
        if isinstance(deb, str):
            return fail(deb, target)
        unpacked = tmp / "root"
        extracted = run("dpkg-deb", "-x", str(deb), str(unpacked), cwd=tmp)
        binary = unpacked / "usr/bin/promtool"
        if extracted.returncode != 0 or not binary.is_file():
            return fail(f"no usr/bin/promtool in {deb.name}: {extracted.stderr.strip()}", target)
        partial = target.with_suffix(".tmp")
        shutil.copyfile(binary, partial)
        partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        partial.replace(target)
    version = works(target)
    if version is None:
        target.unlink(missing_ok=True)
        return fail(f"{target} was unpacked but does not run", target)
    print(f"promtool installed at {target}: {version}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
