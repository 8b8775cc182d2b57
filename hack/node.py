"""The real node of the local stack (opt-in: ORGPIPELINE_NODE=kubelet), and a job container under runc.

`ORGPIPELINE_NODE=kubelet hack/stack up` adds, after the stack's own servers:
  * containerd (Debian's 1.6.20, `restrict_oom_score_adj`: the VM has no CAP_SYS_RESOURCE, so a
    sandbox's -998 is clamped to containerd's own score) with runc and the CNI plugins bridge,
    host-local and loopback: pods get 10.89.0.x on the bridge orgp0, whose 10.89.0.1 is this
    machine; no default route, no NAT, no IP forwarding: a pod reaches only 10.89.0.1;
  * a forwarder on 10.89.0.1 to the stores' 127.0.0.1 ports (same port numbers): pods reach
    PostgreSQL, FerretDB and S3 there (`hack/stack env` exports ORGPIPELINE_JOB_POSTGRES_HOST,
    _JOB_MONGO_URI and _JOB_S3_ENDPOINT for the operator);
  * kubelet (k8s.io/kubernetes, the stack's version; cgroup v1 with failCgroupV1: false) with its
    own client certificate (system:node:orgpipeline-node), and kube-scheduler;
  * the images: orgpipeline:dev (hack/image.py) and the sandbox's pause image, imported.
The VM's sysctls stay as they are: the kubelet sets vm.overcommit_memory, kernel.panic and
kernel.panic_on_oops unless they already have its values (or it refuses to start, with
protectKernelDefaults), so it runs in a mount namespace of its own where those /proc/sys files
read its values (bind mounts of small files); its root directory is a shared mount, so the volumes
it mounts reach containerd. It creates no iptables chains (makeIPTablesUtilChains: false).
`hack/stack down` stops all of it and removes the pods' mounts, network namespaces, the bridge and
the kubelet's cgroups.

`run_job` (deliverable 5, and the check of the image without a node): the job container under runc
with the pod's security context: uid/gid 10001, read-only root, /tmp the only writable directory,
no capabilities, no new privileges, containerd's RuntimeDefault seccomp profile, the tier's memory
and CPU limits (cgroup v1), in the host's network namespace (the stores listen on 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import image
import stack
from stack import STATE_DIR, Build, Server

NODE_DIR = STATE_DIR / "node"
NODE_NAME = "orgpipeline-node"
BRIDGE = "orgp0"
HOST_IP = "10.89.0.1"
SUBNET = "10.89.0.0/24"
CNI_NETWORK = "orgpipeline"
CNI_BIN = Path("/usr/lib/cni")
CONTAINERD_VERSION = "1.6.20"  # Debian bookworm's; the seccomp profile is taken from its source
STORE_PORTS = ("postgres", "ferretdb", "s3")
# What the kubelet would write (pkg/kubelet/cm setupKernelTunables); shown to it, never set.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": 1,
    "vm/panic_on_oom": 0,
    "kernel/panic": 10,
    "kernel/panic_on_oops": 1,
    "kernel/keys/root_maxkeys": 1000000,
    "kernel/keys/root_maxbytes": 25000000,
}

BUILDS = [
    Build(
        "kubelet",
        stack.KUBERNETES_VERSION,
        ("kubelet", "kube-scheduler"),
        lambda out: [
            ["go", "build", "-trimpath", "-ldflags", stack._k8s_ldflags(), "-o", f"{out}/"]
            + [f"k8s.io/kubernetes/cmd/{c}" for c in ("kubelet", "kube-scheduler")]
        ],
        stack.GOBUILD / "kubelet",
    ),
    Build(
        "seccomp",
        CONTAINERD_VERSION,
        ("seccomp-profile",),
        lambda out: [["go", "build", "-trimpath", "-o", f"{out}/seccomp-profile", "."]],
        stack.GOBUILD / "seccomp",
    ),
]


class NodeError(stack.StackError):
    pass


def bindir(name: str) -> Path:
    return next(b.bindir for b in BUILDS if b.name == name)


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, text=True, capture_output=True)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(cmd)}: {(proc.stderr or proc.stdout).strip()}")
    return proc


# --------------------------------------------------------------------------- runc (deliverable 5)


def seccomp_profile() -> dict[str, object]:
    """containerd's RuntimeDefault profile for a container without capabilities (its own Go code)."""
    stack.build_all([b for b in BUILDS if b.name == "seccomp"])
    out = sh(str(bindir("seccomp") / "seccomp-profile")).stdout
    return dict(json.loads(out))


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def cpu_millis(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


@dataclass
class JobResult:
    exit_code: int
    stdout: str
    stderr: str
    termination_message: str
    peak_memory_bytes: int
    oom_killed: bool
    seconds: float


_DEFAULT_MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
        "destination": "/dev/mqueue",
        "type": "mqueue",
        "source": "mqueue",
        "options": ["nosuid", "noexec", "nodev"],
    },
    {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    },
    {
        "destination": "/sys/fs/cgroup",
        "type": "cgroup",
        "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
    },
]
# containerd's defaults (oci.WithDefaultSpec): what a container may not read or write in /proc and /sys.
_MASKED = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
]  # fmt: skip
_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def job_spec(
    rootfs: Path,
    image_env: list[str],
    args: list[str],
    env: dict[str, str],
    manifest_dir: Path,
    tmp_dir: Path,
    termination_log: Path,
    cgroup: str,
    memory_limit: str,
    cpu_limit: str,
) -> dict[str, object]:
    """The OCI spec of the job's container as the kubelet and containerd would make it from the
    operator's pod (builders._pod_spec), but in the host's network namespace."""
    uid = image.UID
    memory = memory_bytes(memory_limit)
    period = 100_000
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": uid, "additionalGids": [uid]},  # runAsUser/Group, fsGroup
            "args": args,
            "env": [*image_env, *(f"{k}={v}" for k, v in env.items())],
            "cwd": "/tmp",
            "capabilities": {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
            "noNewPrivileges": True,  # allowPrivilegeEscalation: false
        },
        "root": {"path": str(rootfs), "readonly": True},  # readOnlyRootFilesystem
        "hostname": "orgpipeline-job",
        "mounts": [
            *_DEFAULT_MOUNTS,
            # The manifest ConfigMap (read-only), the emptyDir /tmp, the termination message file.
            {
                "destination": "/etc/orgpipeline",
                "type": "bind",
                "source": str(manifest_dir),
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
            },
            {"destination": "/tmp", "type": "bind", "source": str(tmp_dir), "options": ["rbind", "rw"]},
            {
                "destination": "/dev/termination-log",
                "type": "bind",
                "source": str(termination_log),
                "options": ["rbind", "rw"],
            },
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],  # no "network": the host's
            "cgroupsPath": cgroup,
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": memory, "swap": memory},
                "cpu": {"quota": cpu_millis(cpu_limit) * period // 1000, "period": period, "shares": 512},
                "pids": {"limit": 4096},
            },
            "seccomp": seccomp_profile(),
            "maskedPaths": _MASKED,
            "readonlyPaths": _READONLY,
        },
    }


def _cgroup_v1(controller: str, path: str) -> Path:
    return Path("/sys/fs/cgroup") / controller / path.lstrip("/")


def run_job(
    built: image.Built,
    args: list[str],
    env: dict[str, str],
    manifest_dir: Path,
    memory_limit: str = "512Mi",
    cpu_limit: str = "500m",
    timeout: float = 1800,
) -> JobResult:
    """Runs `args` in the image under runc as the operator's job pod would run (see job_spec)."""
    image.need("runc")
    work = STATE_DIR / "runc" / uuid.uuid4().hex[:12]
    rootfs = _rootfs(built)
    bundle = work / "bundle"
    tmp_dir, term = work / "tmp", work / "termination-log"
    for d in (bundle, tmp_dir):
        d.mkdir(parents=True)
    os.chown(tmp_dir, image.UID, image.UID)
    term.write_text("")
    os.chown(term, image.UID, image.UID)
    image_env = json.loads((rootfs.parent / "config.json").read_text())["process"]["env"]
    # The pod's cgroup (its limit, as the kubelet sets one per pod) holds the container's: the
    # peak is read from it after runc removed the container's own.
    pod_cgroup = f"/orgpipeline-runc/{work.name}"
    cgroup = f"{pod_cgroup}/job"
    memory = memory_bytes(memory_limit)
    mem_dir = _cgroup_v1("memory", pod_cgroup)
    mem_dir.mkdir(parents=True)
    (mem_dir / "memory.limit_in_bytes").write_text(str(memory))
    spec = job_spec(
        rootfs, image_env, args, env, manifest_dir, tmp_dir, term, cgroup, memory_limit, cpu_limit
    )
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    runc_root = STATE_DIR / "runc" / "state"
    started = time.monotonic()
    try:
        proc = subprocess.run(
            ["runc", "--root", str(runc_root), "run", "--bundle", str(bundle), f"orgpipeline-{work.name}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        seconds = time.monotonic() - started
        peak = int((mem_dir / "memory.max_usage_in_bytes").read_text())
        # Killed (SIGKILL) with the cgroup at its limit: what containerd reports as OOMKilled (the
        # container's own cgroup, which counted the kill, is gone with it).
        oom = proc.returncode == 137 and peak >= memory - (1 << 20)
        return JobResult(proc.returncode, proc.stdout, proc.stderr, term.read_text(), peak, oom, seconds)
    finally:
        sh("runc", "--root", str(runc_root), "delete", "--force", f"orgpipeline-{work.name}", check=False)
        for controller in ("memory", "cpu", "cpuacct", "cpuset", "pids", "devices", "freezer", "blkio"):
            for d in (_cgroup_v1(controller, cgroup), _cgroup_v1(controller, pod_cgroup)):
                with contextlib.suppress(OSError):
                    d.rmdir()
        shutil.rmtree(work, ignore_errors=True)


def _rootfs(built: image.Built) -> Path:
    """The image unpacked once per tag (a read-only root: every run shares it)."""
    bundle = image.IMAGE_DIR / "bundles" / built.tag
    if not (bundle / "rootfs" / "opt" / "orgpipeline").is_dir():
        image.unpack(built, bundle)
        # Mount points of job_spec's binds: made now, not by runc inside a shared rootfs.
        (bundle / "rootfs" / "etc" / "orgpipeline").mkdir(exist_ok=True)
    return bundle / "rootfs"


# --------------------------------------------------------------------------- the node's servers


def _sock() -> Path:
    return NODE_DIR / "containerd.sock"


def _kubelet_root() -> Path:
    return NODE_DIR / "kubelet"


def ensure_ports(state: dict[str, object]) -> dict[str, object]:
    want = ("containerd_metrics", "kubelet", "kubelet_healthz", "scheduler", "node_forward")
    p = stack.ports(state)
    if all(k in p for k in want):
        return state
    state["ports"] = {**p, **{k: stack.free_port() for k in want if k not in p}}
    (STATE_DIR / "state.json").write_text(json.dumps(state, indent=2))
    return state


def job_environment(state: dict[str, object]) -> dict[str, str]:
    """The stores as the node's pods reach them: what the operator hands the jobs."""
    p = stack.ports(state)
    return {
        "ORGPIPELINE_NODE": "kubelet",
        "ORGPIPELINE_JOB_POSTGRES_HOST": f"{HOST_IP}:{p['postgres']}",
        "ORGPIPELINE_JOB_MONGO_URI": f"mongodb://{HOST_IP}:{p['ferretdb']}/?authMechanism=PLAIN",
        "ORGPIPELINE_JOB_S3_ENDPOINT": f"http://{HOST_IP}:{p['s3']}",
    }


def prepare_network(_: dict[str, object]) -> None:
    """The bridge with this machine's address on the pods' network (the CNI bridge plugin would
    give it one only as a gateway, which also turns IP forwarding on)."""
    if sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
    if HOST_IP not in sh("ip", "-4", "addr", "show", BRIDGE).stdout:
        sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    cni = NODE_DIR / "cni"
    cni.mkdir(parents=True, exist_ok=True)
    (cni / "10-orgpipeline.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": CNI_NETWORK,
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": False,
                        "ipMasq": False,
                        "hairpinMode": False,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": SUBNET, "rangeStart": "10.89.0.10"}]],
                            "dataDir": str(NODE_DIR / "cni-ipam"),
                        },
                    },
                    {"type": "loopback"},
                ],
            },
            indent=2,
        )
    )


def forward_argv(state: dict[str, object]) -> list[str]:
    p = stack.ports(state)
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "forward",
        str(p["node_forward"]),
        *(str(p[k]) for k in STORE_PORTS),
    ]


def containerd_config(state: dict[str, object]) -> Path:
    p = stack.ports(state)
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    path = NODE_DIR / "containerd.toml"
    path.write_text(
        f"""version = 2
root = "{NODE_DIR / "containerd" / "root"}"
state = "{NODE_DIR / "containerd" / "state"}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{_sock()}"
[metrics]
  address = "127.0.0.1:{p["containerd_metrics"]}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{NODE_DIR / "containerd" / "opt"}"
[{cri}]
  sandbox_image = "{image.PAUSE_NAME}"
  # The VM has no CAP_SYS_RESOURCE: a sandbox's oom_score_adj of -998 is clamped to containerd's.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "/usr/bin/runc"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{NODE_DIR / "cni"}"
    max_conf_num = 1
"""
    )
    return path


def ctr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ctr", "--address", str(_sock()), "--namespace", "k8s.io", *args, check=check)


def containerd_ready(_: dict[str, object]) -> bool:
    return _sock().exists() and ctr("version", check=False).returncode == 0


def import_images(_: dict[str, object]) -> None:
    """orgpipeline:dev (built from this checkout) and the pause image, once per content."""
    built = image.build()
    archives = [
        image.docker_archive(built),
        image.pause_image(_k8s_module()),
    ]
    record = NODE_DIR / "imported"
    done = set(record.read_text().split()) if record.exists() else set()
    for archive in archives:
        if archive.name in done:
            continue
        ctr("images", "import", str(archive))
        done.add(archive.name)
        record.write_text("\n".join(sorted(done)))
    print(
        f"stack: image {image.IMAGE_NAME} ({built.tag}): {built.compressed_bytes / 1e6:.0f} MB compressed, "
        f"{built.unpacked_bytes / 1e6:.0f} MB unpacked",
        flush=True,
    )


def _k8s_module() -> Path:
    gomodcache = sh("go", "env", "GOMODCACHE").stdout.strip()
    return Path(gomodcache) / f"k8s.io/kubernetes@{stack.KUBERNETES_VERSION}"


def _issue_cert(pki: Path, name: str, subj: str, ext: str) -> None:
    """<pki>/<name>.{key,crt}, signed by the stack's CA (as stack.ensure_certs issues its own)."""
    key, csr, crt, extfile = (pki / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    extfile.write_text(ext)
    stack.openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout", str(key), "-out", str(csr)
    )
    stack.openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
        "-CAcreateserial", "-days", "3650", "-extfile", str(extfile), "-out", str(crt),
    )  # fmt: skip


def issue_node_certs(state: dict[str, object]) -> None:
    pki = STATE_DIR / "pki"
    client = "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
    for name, subj in (
        ("node", f"/O=system:nodes/CN=system:node:{NODE_NAME}"),
        ("scheduler", "/CN=system:kube-scheduler"),
    ):
        if not (pki / f"{name}.crt").exists():
            _issue_cert(pki, name, subj, client)
        stack.write_kubeconfig(NODE_DIR / f"{name}.kubeconfig", pki, name, stack.ports(state)["apiserver"])
    # The node's rights: the built-in system:node role, bound to the nodes' group (no Node authorizer
    # here: the stack's API server authorizes with RBAC only).
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "orgpipeline:node"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
    }
    kubectl = stack.bindir("kubernetes") / "kubectl"
    proc = subprocess.run(
        [str(kubectl), "--kubeconfig", str(STATE_DIR / "kubeconfig"), "apply", "-f", "-"],
        input=json.dumps(binding),
        text=True,
        capture_output=True,
    )
    if proc.returncode != 0:
        raise NodeError(f"binding the node's role: {proc.stderr.strip()}")


def kubelet_config(state: dict[str, object]) -> Path:
    p = stack.ports(state)
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # cgroup v1 is all this VM has; kubelet 1.36 refuses it unless told.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{_sock()}",
        "address": HOST_IP,
        "port": p["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": p["kubelet_healthz"],
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(STATE_DIR / "pki" / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        # No sysctl writes (see the module's docstring: they are shown their values instead), no
        # iptables chains, no OOM score for itself (no CAP_SYS_RESOURCE), no swap.
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "kernelMemcgNotification": False,
        "oomScoreAdj": 0,
        "failSwapOn": False,
        "podLogsDir": str(NODE_DIR / "pod-logs"),
        "volumePluginDir": str(NODE_DIR / "volume-plugins"),
        "resolvConf": "/etc/resolv.conf",
        "registerNode": True,
        "serializeImagePulls": False,
        # The imported image cannot be pulled again: never collected.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "nodeStatusUpdateFrequency": "10s",
        "runtimeRequestTimeout": "5m",
    }
    path = NODE_DIR / "kubelet.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def prepare_kubelet(state: dict[str, object]) -> None:
    """Its root is a shared mount (its volume mounts, made in its own mount namespace, reach
    containerd's) and the sysctl values it wants are in files bound over /proc/sys in that
    namespace (see kubelet_argv)."""
    root = _kubelet_root()
    root.mkdir(parents=True, exist_ok=True)
    if not _is_mountpoint(root):
        sh("mount", "--bind", str(root), str(root))
        sh("mount", "--make-shared", str(root))
    kubelet_config(state)


def _is_mountpoint(path: Path) -> bool:
    target = str(path)
    return any(line.split()[4] == target for line in Path("/proc/self/mountinfo").read_text().splitlines())


def kubelet_argv(state: dict[str, object]) -> list[str]:
    fake = NODE_DIR / "sysctl"
    script = ["set -e", "mount --make-rprivate /proc"]
    for key, value in KUBELET_SYSCTLS.items():
        current = Path("/proc/sys", key).read_text().strip()
        if current != str(value):
            f = fake / key.replace("/", ".")
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(f"{value}\n")
            script.append(f"mount --bind -o ro {f} /proc/sys/{key}")
    kubelet = [
        str(bindir("kubelet") / "kubelet"),
        f"--config={NODE_DIR / 'kubelet.yaml'}",
        f"--kubeconfig={NODE_DIR / 'node.kubeconfig'}",
        f"--root-dir={_kubelet_root()}",
        f"--cert-dir={NODE_DIR / 'kubelet-pki'}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={HOST_IP}",
        "--v=1",
    ]
    script.append("exec " + " ".join(kubelet))
    return ["unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c", "\n".join(script)]


def kubelet_ready(state: dict[str, object]) -> bool:
    if not stack.http_ok(f"http://127.0.0.1:{stack.ports(state)['kubelet_healthz']}/healthz"):
        return False
    node = _kubectl_json("get", "node", NODE_NAME)
    conditions = {c["type"]: c["status"] for c in (node or {}).get("status", {}).get("conditions", [])}
    return conditions.get("Ready") == "True"


def _kubectl_json(*args: str) -> dict[str, Any] | None:
    kubectl = stack.bindir("kubernetes") / "kubectl"
    proc = subprocess.run(
        [str(kubectl), "--kubeconfig", str(STATE_DIR / "kubeconfig"), *args, "-o", "json"],
        capture_output=True,
        text=True,
    )
    return dict(json.loads(proc.stdout)) if proc.returncode == 0 else None


def scheduler_argv(state: dict[str, object]) -> list[str]:
    kubeconfig = NODE_DIR / "scheduler.kubeconfig"
    return [
        str(bindir("kubelet") / "kube-scheduler"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={stack.ports(state)['scheduler']}",
        "--leader-elect=false",
        "--v=1",
    ]


def scheduler_ready(state: dict[str, object]) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return stack.http_ok(f"https://127.0.0.1:{stack.ports(state)['scheduler']}/healthz", ctx)


SERVERS = [
    Server("containerd", lambda s: ["containerd", "--config", str(containerd_config(s))], containerd_ready,
           "containerd_metrics", prepare=prepare_network, after_start=import_images, timeout=60),
    Server("node-forward", forward_argv, lambda s: stack.port_open(stack.ports(s)["node_forward"]),
           "node_forward"),
    Server("kube-scheduler", scheduler_argv, scheduler_ready, "scheduler", prepare=issue_node_certs,
           timeout=60),
    Server("kubelet", kubelet_argv, kubelet_ready, "kubelet_healthz", prepare=prepare_kubelet, timeout=120),
]  # fmt: skip


def up(state: dict[str, object]) -> None:
    started = time.monotonic()
    for what in ("containerd", "runc", "ctr", "unshare", "ip", "mmdebstrap", "umoci", "skopeo"):
        if shutil.which(what) is None:
            raise NodeError(f"{what} is missing: run `ORGPIPELINE_NODE=kubelet hack/bootstrap`")
    if not (CNI_BIN / "bridge").exists():
        raise NodeError("the CNI plugins are missing: run `ORGPIPELINE_NODE=kubelet hack/bootstrap`")
    stack.build_all(BUILDS)
    state = ensure_ports(state)
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    for server in SERVERS:
        stack.start(server, state)
    print(f"stack: node {NODE_NAME} ready in {time.monotonic() - started:.1f}s", flush=True)


def down() -> None:
    """Stops the node and removes what it made; a no-op when it never ran."""
    if not NODE_DIR.exists():
        return
    for server in (s for s in reversed(SERVERS) if s.name != "containerd"):
        stack.stop(server)
    # Its Node goes too: a Node left Ready would pass for the next kubelet's before it registers.
    if stack.running_pid("kube-apiserver"):
        kubectl = stack.bindir("kubernetes") / "kubectl"
        subprocess.run(
            [
                str(kubectl),
                "--kubeconfig",
                str(STATE_DIR / "kubeconfig"),
                "delete",
                "node",
                NODE_NAME,
                "--wait=false",
            ],
            capture_output=True,
        )
    if stack.running_pid("containerd") and _sock().exists():
        for line in ctr("tasks", "ls", "-q", check=False).stdout.split():
            ctr("tasks", "kill", "-s", "SIGKILL", line, check=False)
        time.sleep(1)
        for line in ctr("tasks", "ls", "-q", check=False).stdout.split():
            ctr("tasks", "delete", "-f", line, check=False)
        for line in ctr("containers", "ls", "-q", check=False).stdout.split():
            ctr("containers", "delete", line, check=False)
    stack.stop(SERVERS[0])
    _kill_shims()
    _remove_netns()
    _unmount_under(NODE_DIR)
    if sh("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        sh("ip", "link", "delete", BRIDGE, check=False)
    _remove_cgroups("kubepods")
    _remove_host_leftovers()


def _remove_host_leftovers() -> None:
    """What the kubelet and containerd make outside .stack whatever they are told: the kubelet's
    /var/log/containers links and device-plugin socket, the shims' and runc's state under
    /run/containerd (this stack's containers only: k8s.io is its namespace, and it is stopped)."""
    links = Path("/var/log/containers")
    for link in links.glob("*.log") if links.is_dir() else []:
        if link.is_symlink() and str(os.readlink(link)).startswith(str(NODE_DIR)):
            link.unlink()
    Path("/var/lib/kubelet/device-plugins/kubelet.sock").unlink(missing_ok=True)
    shutil.rmtree("/run/containerd/runc/k8s.io", ignore_errors=True)
    for top in (links, Path("/var/lib/kubelet"), Path("/run/containerd")):
        _remove_empty_dirs(top)


def _kill_shims() -> None:
    """containerd's shims for this stack's containerd (named by its socket), by pid."""
    sock = str(_sock())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def _remove_netns() -> None:
    """The pods' network namespaces: containerd's CNI results name them (network orgpipeline)."""
    results = Path("/var/lib/cni/results")
    for f in results.glob(f"{CNI_NETWORK}-*") if results.exists() else []:
        with contextlib.suppress(ValueError, OSError):
            netns = json.loads(f.read_text()).get("netns", "")
            if netns.startswith("/var/run/netns/") or netns.startswith("/run/netns/"):
                sh("ip", "netns", "delete", Path(netns).name, check=False)
            f.unlink()


def _unmount_under(root: Path) -> None:
    prefix = str(root.resolve())
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for target in sorted(
        (m for m in mounts if m == prefix or m.startswith(prefix + "/")), key=len, reverse=True
    ):
        sh("umount", "-l", target, check=False)


def _remove_cgroups(name: str) -> None:
    for controller in Path("/sys/fs/cgroup").iterdir():
        _remove_empty_dirs(controller / name)


def _remove_empty_dirs(top: Path) -> None:
    """Every empty directory under `top`, deepest first, then `top` (a cgroup is removed by rmdir,
    and only once it is empty); what is not empty stays."""
    if not top.is_dir():
        return
    for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        top.rmdir()


def status(state: dict[str, object]) -> bool:
    healthy = True
    state = ensure_ports(state)
    for server in SERVERS:
        pid = stack.running_pid(server.name)
        ok = bool(pid) and server.ready(state)
        healthy &= ok
        port = stack.ports(state)[server.port_key]
        print(
            f"{server.name:<24} {'ready' if ok else ('not ready' if pid else 'stopped'):<10} "
            f"pid={pid or '-':<8} port={port:<6} log={stack.logfile(server.name)}"
        )
    return healthy


# --------------------------------------------------------------------------- the stores' forwarder


def forward(health_port: int, ports: list[int]) -> None:
    """Listens on HOST_IP:<port> for each store and relays to 127.0.0.1:<port>; a health port on
    127.0.0.1 tells the stack it runs."""
    import asyncio

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def relay(port: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        return handle

    async def main() -> None:
        servers = [await asyncio.start_server(relay(p), HOST_IP, p) for p in ports]

        async def health(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.close()

        servers.append(await asyncio.start_server(health, "127.0.0.1", health_port))
        await asyncio.gather(*(s.serve_forever() for s in servers))

    asyncio.run(main())


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "forward":
        forward(int(sys.argv[2]), [int(p) for p in sys.argv[3:]])
    else:
        print("usage: hack/node.py forward HEALTH_PORT PORT...", file=sys.stderr)
        sys.exit(2)
