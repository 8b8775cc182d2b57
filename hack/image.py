"""The product's image, built without a Docker engine from the Dockerfile's recipe.

    .venv/bin/python hack/image.py build     build (or find cached) and print the OCI layout and size
    .venv/bin/python hack/image.py bundle D  unpack the image as a runc bundle into D

Same recipe as the Dockerfile: Debian bookworm with its python3, a virtual environment at
/opt/orgpipeline holding the project's wheel and its dependencies (no pip in it), a system user
and group 10001 `orgpipeline`, WORKDIR /tmp, USER 10001:10001, PATH and the Python environment of
the Dockerfile, `orgpipeline-operator` as the command. Two differences, both because no image can
be pulled here: the root filesystem comes from Debian's packages (mmdebstrap) instead of the
python:3.11.7-slim-bookworm image, so the interpreter is Debian's python3 (3.11.2, same ABI), and
the layers are assembled with umoci.

Two layers, each cached in ~/.cache/orgpipeline/image (an OCI layout, one tag per key):
  base  Debian + python3 + the dependency wheels (the versions of .venv, as tested); rebuilt only
        when the dependencies change (a few minutes);
  app   the project's wheel on top (seconds): rebuilt whenever the sources change.
The pause image a pod sandbox needs (registry.k8s.io/pause) is built here too, from the pause.c of
the k8s.io/kubernetes module the stack builds from (`pause_image`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))
CACHE = Path(os.environ.get("ORGPIPELINE_CACHE", Path.home() / ".cache" / "orgpipeline"))
IMAGE_DIR = CACHE / "image"
LAYOUT = IMAGE_DIR / "oci"
IMAGE_NAME = "orgpipeline:dev"
"""The image's name on the node: the operator's default ORGPIPELINE_JOB_IMAGE."""
PAUSE_NAME = "registry.k8s.io/pause:3.10"
SUITE = "bookworm"
UID = 10001
# Bumped when the recipe below changes: part of every key.
RECIPE = "2"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "tzdata")
# What the Dockerfile's final stage sets (ENV, WORKDIR, USER, CMD, LABEL, EXPOSE).
ENV = (
    "PATH=/opt/orgpipeline/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
    "LANG=C.UTF-8",
)
LABELS = {
    "org.opencontainers.image.title": "orgpipeline",
    "org.opencontainers.image.description": (
        "OrgPipelines operator and data-plane jobs (S3 CSV -> MongoDB -> PostgreSQL)"
    ),
    "org.opencontainers.image.licenses": "Apache-2.0",
}
# Nothing a running job reads: documentation, manuals, translations.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)


class ImageError(RuntimeError):
    """A failure the user can act on; printed as one line."""


@dataclass(frozen=True)
class Built:
    layout: Path
    tag: str
    compressed_bytes: int
    unpacked_bytes: int
    seconds: float

    @property
    def ref(self) -> str:
        return f"{self.layout}:{self.tag}"


def log(msg: str) -> None:
    print(f"image: {msg}", flush=True)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, text=True, capture_output=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-8:]
        raise ImageError(
            f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} failed (exit {proc.returncode}):\n  "
            + "\n  ".join(tail)
        )
    return proc


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise ImageError(f"missing {', '.join(missing)}: run `ORGPIPELINE_NODE=kubelet hack/bootstrap`")


@contextlib.contextmanager
def locked() -> Iterator[None]:
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    with (IMAGE_DIR / "lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _hash(*parts: bytes) -> str:
    d = hashlib.sha256()
    for p in parts:
        d.update(len(p).to_bytes(8, "big") + p)
    return d.hexdigest()[:12]


def sources() -> list[str]:
    """What goes into the wheel: pyproject.toml, the README and the packages it lists (a package
    added there is part of the key without an edit here)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    return ["pyproject.toml", "README.md", *sorted({p.split("/")[0] for p in packages})]


def sources_key() -> str:
    parts: list[bytes] = [RECIPE.encode()]
    for name in sources():
        path = REPO / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc" or ".egg-info" in str(f):
                continue
            parts += [str(f.relative_to(REPO)).encode(), f.read_bytes()]
    return _hash(*parts)


def tags() -> set[str]:
    index = LAYOUT / "index.json"
    if not index.exists():
        return set()
    data = json.loads(index.read_text())
    return {
        m.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
        for m in data.get("manifests", [])
    }


def wheels(work: Path) -> tuple[Path, list[Path]]:
    """The project's wheel and its dependencies' wheels, pinned to the versions in .venv."""
    pip = REPO / ".venv" / "bin" / "pip"
    out = work / "wheels"
    out.mkdir()
    app_dir = work / "app"
    run([str(pip), "wheel", "-q", "--no-deps", "--wheel-dir", str(app_dir), str(REPO)])
    app = next(app_dir.glob("orgpipeline-*.whl"))
    freeze = run([str(pip), "list", "--format=freeze", "--exclude-editable"]).stdout
    constraints = work / "constraints.txt"
    constraints.write_text(freeze)
    run([str(pip), "wheel", "-q", "--wheel-dir", str(out), "-c", str(constraints), str(app)])
    (out / app.name).unlink(missing_ok=True)
    deps = sorted(out.glob("*.whl"))
    return app, deps


def _umoci_config(tag: str) -> None:
    cmd = [
        "umoci", "config", "--image", f"{LAYOUT}:{tag}",
        "--config.user", f"{UID}:{UID}",
        "--config.workingdir", "/tmp",
        "--clear=config.env", "--clear=config.cmd", "--clear=config.entrypoint",
        "--config.cmd", "orgpipeline-operator",
        "--os", "linux", "--architecture", "amd64",
        "--history.created_by", "hack/image.py (the Dockerfile's recipe, without Docker)",
    ]  # fmt: skip
    for e in ENV:
        cmd += ["--config.env", e]
    for k, v in LABELS.items():
        cmd += ["--config.label", f"{k}={v}"]
    for port in (8080, 8081, 8082):
        cmd += ["--config.exposedports", f"{port}/tcp"]
    run(cmd)


def build_base(key: str, deps: list[Path], work: Path) -> str:
    tag = f"base-{key}"
    if tag in tags():
        return tag
    need("mmdebstrap", "umoci")
    start = time.monotonic()
    log(f"building the base layer (Debian {SUITE} + python3 + {len(deps)} wheels; first time only)")
    tar = work / "base.tar"
    hooks = [
        f'mkdir -p "$1/tmp/wheels" && cp {work / "wheels"}/* "$1/tmp/wheels/"',
        'chroot "$1" python3 -m venv --without-pip /opt/orgpipeline',
        # Debian's pip, run from its wheel, installs into the venv (--python): the venv gets no pip.
        'chroot "$1" sh -c \'python3 "$(echo /usr/share/python-wheels/pip-*.whl)/pip"'
        " --python /opt/orgpipeline/bin/python install -q --no-index /tmp/wheels/*.whl'",
        f'chroot "$1" groupadd --system --gid {UID} orgpipeline',
        f'chroot "$1" useradd --system --uid {UID} --gid {UID} --home-dir /nonexistent --no-create-home'
        " --shell /usr/sbin/nologin orgpipeline",
        'rm -rf "$1/tmp/wheels" "$1/var/cache/apt"/*.bin "$1/var/log"/*.log "$1/var/log/apt"/*',
    ]
    cmd = [
        "mmdebstrap",
        "--quiet",
        "--mode=root",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        *(f"--dpkgopt={o}" for o in DPKG_EXCLUDES),
        *(f"--customize-hook={h}" for h in hooks),
        SUITE,
        str(tar),
        "/etc/apt/sources.list.d/debian.sources",
    ]
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0"}
    run(cmd, env=env)
    if not LAYOUT.exists():
        run(["umoci", "init", "--layout", str(LAYOUT)])
    run(["umoci", "new", "--image", f"{LAYOUT}:{tag}"])
    run(["umoci", "raw", "add-layer", "--image", f"{LAYOUT}:{tag}", str(tar)])
    _umoci_config(tag)
    log(f"base layer built in {time.monotonic() - start:.0f}s")
    return tag


def build_app(base: str, app: Path, key: str, work: Path) -> str:
    tag = f"app-{key}"
    if tag in tags():
        return tag
    bundle = work / "bundle"
    run(["umoci", "tag", "--image", f"{LAYOUT}:{base}", tag])
    run(["umoci", "unpack", "--image", f"{LAYOUT}:{tag}", str(bundle)])
    rootfs = bundle / "rootfs"
    shutil.copy(app, rootfs / "tmp" / app.name)
    pip = next((rootfs / "usr/share/python-wheels").glob("pip-*.whl")).name
    run(
        [
            "chroot", str(rootfs), "python3", f"/usr/share/python-wheels/{pip}/pip",
            "--python", "/opt/orgpipeline/bin/python", "install", "-q", "--no-deps", "--no-index",
            f"/tmp/{app.name}",
        ]
    )  # fmt: skip
    (rootfs / "tmp" / app.name).unlink()
    # The Dockerfile's own check: both commands start in the image.
    for command in ("orgpipeline", "orgpipeline-operator"):
        run(
            ["chroot", "--userspec", f"{UID}:{UID}", str(rootfs), f"/opt/orgpipeline/bin/{command}", "--help"]
        )
    run(["umoci", "repack", "--image", f"{LAYOUT}:{tag}", str(bundle)])
    _umoci_config(tag)
    return tag


def build() -> Built:
    """Builds what is missing and returns the app image (an OCI layout and its tag)."""
    need("umoci")
    start = time.monotonic()
    key = sources_key()
    with locked():
        tag = f"app-{key}"
        if tag not in tags():
            import stack  # its progress ticker: a first build takes minutes

            with (
                stack._ticker(f"building the image {IMAGE_NAME}", start),
                tempfile.TemporaryDirectory(prefix="orgpipeline-image-", dir=IMAGE_DIR) as tmp,
            ):
                work = Path(tmp)
                app, deps = wheels(work)
                base_key = _hash(
                    RECIPE.encode(), *(p.name.encode() for p in deps), ",".join(BASE_PACKAGES).encode()
                )
                base = build_base(base_key, deps, work)
                build_app(base, app, key, work)
            prune(keep={tag, base})
        size = image_size(tag)
    return Built(LAYOUT, tag, size[0], size[1], time.monotonic() - start)


def prune(keep: set[str]) -> None:
    """Older app images go (an image per source change would fill the disk): their tags, their
    docker archives and unpacked bundles, then the blobs nothing refers to."""
    for old in tags() - keep:
        if old.startswith("app-"):
            run(["umoci", "rm", "--image", f"{LAYOUT}:{old}"])
            (IMAGE_DIR / f"{old}.docker.tar").unlink(missing_ok=True)
            (IMAGE_DIR / f"{old}.size.json").unlink(missing_ok=True)
            shutil.rmtree(IMAGE_DIR / "bundles" / old, ignore_errors=True)
    run(["umoci", "gc", "--layout", str(LAYOUT)])


def _blob(digest: str) -> Path:
    algo, _, hexd = digest.partition(":")
    return LAYOUT / "blobs" / algo / hexd


def manifest(tag: str) -> dict[str, Any]:
    index = json.loads((LAYOUT / "index.json").read_text())
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return dict(json.loads(_blob(m["digest"]).read_text()))
    raise ImageError(f"no image {tag} in {LAYOUT}")


def image_size(tag: str) -> tuple[int, int]:
    """(compressed layers, unpacked bytes): what a registry stores and what a node unpacks."""
    known = IMAGE_DIR / f"{tag}.size.json"
    if known.exists():
        compressed, unpacked = json.loads(known.read_text())
        return int(compressed), int(unpacked)
    layers = manifest(tag)["layers"]
    compressed = sum(int(layer["size"]) for layer in layers)
    unpacked = 0
    for layer in layers:
        out = subprocess.run(
            f"gzip -dc {_blob(layer['digest'])} | wc -c",
            shell=True,
            text=True,
            capture_output=True,
            check=True,
        )
        unpacked += int(out.stdout.strip())
    known.write_text(json.dumps([compressed, unpacked]))
    return compressed, unpacked


def unpack(built: Built, bundle: Path) -> Path:
    """A runc bundle of the image (config.json from the image's config, rootfs/)."""
    shutil.rmtree(bundle, ignore_errors=True)
    run(["umoci", "unpack", "--image", built.ref, str(bundle)])
    return bundle


def docker_archive(built: Built, name: str = IMAGE_NAME) -> Path:
    """The image as a docker-archive tarball named `name` (what `ctr images import` takes)."""
    need("skopeo")
    out = IMAGE_DIR / f"{built.tag}.docker.tar"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        run(["skopeo", "copy", "-q", f"oci:{built.ref}", f"docker-archive:{tmp}:{name}"])
        tmp.rename(out)
    return out


def pause_image(k8s_module: Path) -> Path:
    """registry.k8s.io/pause as a docker-archive: pause.c of k8s.io/kubernetes, built statically."""
    need("umoci", "skopeo", "gcc")
    source = k8s_module / "build" / "pause" / "linux" / "pause.c"
    key = _hash(RECIPE.encode(), source.read_bytes())
    out = IMAGE_DIR / f"pause-{key}.docker.tar"
    if out.exists():
        return out
    with locked(), tempfile.TemporaryDirectory(prefix="pause-", dir=IMAGE_DIR) as tmp:
        work = Path(tmp)
        root = work / "root"
        root.mkdir()
        run(["gcc", "-Os", "-static", "-DVERSION=3.10", "-o", str(root / "pause"), str(source)])
        run(["strip", str(root / "pause")])
        run(
            [
                "tar",
                "-C",
                str(root),
                "--owner=0",
                "--group=0",
                "--mtime=@0",
                "-cf",
                str(work / "l.tar"),
                "pause",
            ]
        )
        layout = work / "oci"
        run(["umoci", "init", "--layout", str(layout)])
        run(["umoci", "new", "--image", f"{layout}:pause"])
        run(["umoci", "raw", "add-layer", "--image", f"{layout}:pause", str(work / "l.tar")])
        run(
            [
                "umoci", "config", "--image", f"{layout}:pause", "--config.entrypoint", "/pause",
                "--config.user", "65535:65535", "--os", "linux", "--architecture", "amd64",
            ]
        )  # fmt: skip
        tmp_out = out.with_suffix(".tmp")
        run(["skopeo", "copy", "-q", f"oci:{layout}:pause", f"docker-archive:{tmp_out}:{PAUSE_NAME}"])
        tmp_out.rename(out)
    return out


def main(argv: list[str]) -> int:
    verb = argv[0] if argv else "build"
    try:
        built = build()
        if verb == "build":
            print(
                f"image: {IMAGE_NAME} = {built.ref}: {built.compressed_bytes / 1e6:.1f} MB compressed, "
                f"{built.unpacked_bytes / 1e6:.1f} MB unpacked ({built.seconds:.1f}s)"
            )
        elif verb == "bundle" and len(argv) == 2:
            print(unpack(built, Path(argv[1])))
        elif verb == "archive":
            print(docker_archive(built))
        else:
            print("usage: hack/image.py build|bundle DIR|archive", file=sys.stderr)
            return 2
    except ImageError as exc:
        print(f"image: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
