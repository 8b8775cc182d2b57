"""The local test ground: real servers built from Go modules and Debian's PostgreSQL, no Docker.

    hack/stack up       build what is missing (once, into a cache keyed by version) and start
    hack/stack down     stop every server (`--purge` also deletes their data)
    hack/stack status   one line per server
    hack/stack env      shell exports (`eval "$(hack/stack env)"`), or `--json`

Servers, all on 127.0.0.1 with free ports, the way controller-runtime's envtest runs them:
etcd, kube-apiserver (TLS, client-certificate admin, RBAC, service-account keys) and
kube-controller-manager (all controllers: CronJobs make Jobs, Jobs make Pods, GC, namespace
deletion; there is no kubelet, so Pods stay Pending), a private PostgreSQL instance, FerretDB
(MongoDB wire protocol on that PostgreSQL) and versitygw (S3 on a local directory; it posts a
bucket notification for every change to the stack's webhook port, where an operator started with
ORGPIPELINE_WEBHOOK_PORT/_TOKEN from ORGPIPELINE_STACK_WEBHOOK_PORT/_TOKEN receives them).

With ORGPIPELINE_NODE=kubelet a real node follows (hack/node.py: containerd, runc, CNI, kubelet,
kube-scheduler, the image of hack/image.py); `down` removes it too.

With ORGPIPELINE_USE_EXISTING_CLUSTER=1 the Kubernetes part is not started: KUBECONFIG names the
cluster (kind on a laptop) and only the data servers run here.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# One module however it is loaded: run as a script, hack/node.py's `import stack` is this one.
sys.modules.setdefault("stack", sys.modules[__name__])

REPO = Path(__file__).resolve().parent.parent
GOBUILD = REPO / "hack" / "gobuild"
STATE_DIR = Path(os.environ.get("ORGPIPELINE_STACK_DIR", REPO / ".stack"))
CACHE = Path(os.environ.get("ORGPIPELINE_CACHE", Path.home() / ".cache" / "orgpipeline"))
EXISTING_CLUSTER = os.environ.get("ORGPIPELINE_USE_EXISTING_CLUSTER") == "1"
NODE = os.environ.get("ORGPIPELINE_NODE", "") == "kubelet"
"""A real node (kubelet, containerd, runc, CNI) after the servers: hack/node.py."""

KUBERNETES_VERSION = "v1.36.3"
STAGING_VERSION = "v0.36.3"  # the k8s.io/* staging modules released with KUBERNETES_VERSION
ETCD_VERSION = "v3.6.16"
FERRETDB_VERSION = "v1.24.2"
VERSITYGW_VERSION = "v1.7.0"
HELM_VERSION = "v3.22.0"
PROMETHEUS_VERSION = "v0.316.0"  # the PromQL parser of the chart tests (wrapper hack/gobuild/promql)

S3_ACCESS_KEY = "orgpipeline"
PG_DATABASE = "orgpipeline"


class StackError(RuntimeError):
    """A failure the user can act on; printed as one line."""


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class Build:
    name: str
    version: str
    outputs: tuple[str, ...]
    command: Callable[[Path], list[list[str]]]
    workdir: Path | None = None

    @functools.cached_property
    def key(self) -> str:
        # The wrapper module's files are part of the key: editing them rebuilds. Hashed once per
        # process: bindir() is asked for every server's argv.
        digest = hashlib.sha256()
        if self.workdir:
            for f in sorted(self.workdir.iterdir()):
                digest.update(f.name.encode() + f.read_bytes())
        return f"{self.name}-{self.version}-{digest.hexdigest()[:10]}"

    @property
    def bindir(self) -> Path:
        return CACHE / "bin" / self.key

    def built(self) -> bool:
        return all((self.bindir / o).is_file() for o in self.outputs)


def _k8s_ldflags() -> str:
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        minor = KUBERNETES_VERSION.split(".")[1]
        flags += [
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor=1",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


BUILDS = [
    Build(
        "kubernetes",
        KUBERNETES_VERSION,
        ("kube-apiserver", "kube-controller-manager", "kubectl"),
        lambda out: [
            ["go", "build", "-trimpath", "-ldflags", _k8s_ldflags(), "-o", f"{out}/"]
            + [f"k8s.io/kubernetes/cmd/{c}" for c in ("kube-apiserver", "kube-controller-manager", "kubectl")]
        ],
        GOBUILD / "kubernetes",
    ),
    Build(
        "etcd",
        ETCD_VERSION,
        ("etcd",),
        lambda out: [["go", "build", "-trimpath", "-o", f"{out}/etcd", "."]],
        GOBUILD / "etcd",
    ),
    Build(
        "ferretdb",
        FERRETDB_VERSION,
        ("ferretdb",),
        lambda out: [["go", "build", "-trimpath", "-o", f"{out}/ferretdb", "."]],
        GOBUILD / "ferretdb",
    ),
    Build(
        "versitygw",
        VERSITYGW_VERSION,
        ("versitygw",),
        lambda out: [
            ["go", "install", "-trimpath", f"github.com/versity/versitygw/cmd/versitygw@{VERSITYGW_VERSION}"]
        ],
    ),
    Build(
        "helm",
        HELM_VERSION,
        ("helm",),
        lambda out: [
            [
                "go",
                "install",
                "-trimpath",
                "-ldflags",
                f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
                f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}",
            ]
        ],
    ),
    Build(
        "promql",
        PROMETHEUS_VERSION,
        ("promql-check",),
        lambda out: [["go", "build", "-trimpath", "-o", f"{out}/promql-check", "."]],
        GOBUILD / "promql",
    ),
]


def build_all(builds: list[Build] | None = None) -> None:
    builds = BUILDS if builds is None else builds
    if all(b.built() for b in builds):
        return
    # The cache is shared by every checkout on the machine: one builder at a time, the others wait
    # and then find the binaries built.
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build_missing(builds)


def _build_missing(builds: list[Build]) -> None:
    for b in builds:
        if b.built():
            continue
        tmp = b.bindir.with_name(b.bindir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log = CACHE / "logs" / f"build-{b.key}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": str(tmp), "GOFLAGS": "-buildvcs=false"}
        start = time.monotonic()
        with _ticker(f"building {b.name} {b.version}", start), log.open("w") as out:
            for cmd in b.command(tmp):
                rc = subprocess.run(
                    cmd, cwd=b.workdir or CACHE, env=env, stdout=out, stderr=subprocess.STDOUT
                ).returncode
                if rc != 0:
                    tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                    raise StackError(
                        f"building {b.name} failed (exit {rc}); log: {log}\n  " + "\n  ".join(tail)
                    )
        tmp.rename(b.bindir)
        print(
            f"stack: built {b.name} {b.version} in {time.monotonic() - start:.0f}s -> {b.bindir}", flush=True
        )


@contextlib.contextmanager
def _ticker(what: str, start: float) -> Iterator[None]:
    """Prints progress during a long build so that a first run never looks hung."""
    stop = threading.Event()
    print(f"stack: {what} (first time only; later runs reuse {CACHE})", flush=True)

    def tick() -> None:
        while not stop.wait(15):
            print(f"stack:   ... {what}: {time.monotonic() - start:.0f}s", flush=True)

    t = threading.Thread(target=tick, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def bindir(name: str) -> Path:
    return next(b.bindir for b in BUILDS if b.name == name)


# --------------------------------------------------------------------------- state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_state() -> dict[str, object]:
    path = STATE_DIR / "state.json"
    if path.exists():
        state = dict(json.loads(path.read_text()))
        if "webhook_token" not in state:  # a stack made before versitygw posted notifications
            state["ports"] = {**ports(state), "webhook": free_port()}
            state["webhook_token"] = secrets.token_hex(16)
            path.write_text(json.dumps(state, indent=2))
        if "operator_pg_password" not in state:  # a stack made when the operator was a superuser
            state["operator_pg_password"] = secrets.token_hex(16)
            path.write_text(json.dumps(state, indent=2))
        return state
    state: dict[str, object] = {
        "ports": {
            n: free_port()
            for n in ("etcd", "etcd_peer", "apiserver", "kcm", "postgres", "ferretdb", "s3", "webhook")
        },
        "pg_password": secrets.token_hex(16),
        "operator_pg_password": secrets.token_hex(16),
        "webhook_token": secrets.token_hex(16),
        "s3_secret": secrets.token_hex(16),
    }
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))
    return state


def ports(state: dict[str, object]) -> dict[str, int]:
    return dict(state["ports"])  # type: ignore[call-overload]


def pidfile(name: str) -> Path:
    return STATE_DIR / "pids" / f"{name}.pid"


def logfile(name: str) -> Path:
    return STATE_DIR / "logs" / f"{name}.log"


def running_pid(name: str) -> int | None:
    try:
        pid = int(pidfile(name).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    # A zombie or a recycled pid is not our server.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return None
    except OSError:
        return None
    return pid


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------- certificates


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ensure_certs() -> Path:
    pki = STATE_DIR / "pki"
    if (pki / "done").exists():
        return pki
    pki.mkdir(parents=True, exist_ok=True)
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-subj",
        "/CN=orgpipeline-local-ca",
        "-keyout",
        str(pki / "ca.key"),
        "-out",
        str(pki / "ca.crt"),
    )

    def issue(name: str, subj: str, ext: str) -> None:
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subj,
            "-keyout",
            str(pki / f"{name}.key"),
            "-out",
            str(pki / f"{name}.csr"),
        )
        (pki / f"{name}.ext").write_text(ext)
        openssl(
            "x509",
            "-req",
            "-in",
            str(pki / f"{name}.csr"),
            "-CA",
            str(pki / "ca.crt"),
            "-CAkey",
            str(pki / "ca.key"),
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            str(pki / f"{name}.ext"),
            "-out",
            str(pki / f"{name}.crt"),
        )

    issue(
        "apiserver",
        "/CN=kube-apiserver",
        "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
    )
    client_ext = "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
    issue("admin", "/O=system:masters/CN=orgpipeline-admin", client_ext)
    issue("kcm", "/CN=system:kube-controller-manager", client_ext)
    openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    (pki / "done").write_text("")
    return pki


def write_kubeconfig(path: Path, pki: Path, user: str, port: int) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "orgpipeline-local",
                        "cluster": {
                            "server": f"https://127.0.0.1:{port}",
                            "certificate-authority": str(pki / "ca.crt"),
                        },
                    }
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate": str(pki / f"{user}.crt"),
                            "client-key": str(pki / f"{user}.key"),
                        },
                    }
                ],
                "contexts": [
                    {"name": "orgpipeline-local", "context": {"cluster": "orgpipeline-local", "user": user}}
                ],
                "current-context": "orgpipeline-local",
            },
            indent=2,
        )
    )


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    argv: Callable[[dict[str, object]], list[str]]
    ready: Callable[[dict[str, object]], bool]
    port_key: str
    user: str | None = None
    prepare: Callable[[dict[str, object]], None] | None = None
    after_start: Callable[[dict[str, object]], None] | None = None
    stop_signal: int = signal.SIGTERM
    timeout: float = 60.0
    env: dict[str, str] = field(default_factory=dict)
    """Set in the server's environment, over the stack's own."""
    restart_on_new_argv: bool = False
    """`up` restarts it when it runs with other arguments than these (a checkout changed them)."""


def _pg_bin() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    if not candidates:
        raise StackError("PostgreSQL is not installed; run hack/bootstrap (it installs Debian's postgresql)")
    return candidates[-1].parent


def pg_admin_dsn(state: dict[str, object], db: str = PG_DATABASE) -> str:
    return f"postgresql://postgres:{state['pg_password']}@127.0.0.1:{ports(state)['postgres']}/{db}"


OPERATOR_PG_ROLE = "orgpipeline_operator"


def pg_operator_dsn(state: dict[str, object], db: str = PG_DATABASE) -> str:
    """The operator's login: no superuser (see operator/README.md, "Isolation")."""
    return (
        f"postgresql://{OPERATOR_PG_ROLE}:{state['operator_pg_password']}"
        f"@127.0.0.1:{ports(state)['postgres']}/{db}"
    )


def ferretdb_backend_url(state: dict[str, object]) -> str:
    """FerretDB's PostgreSQL URL carries no user: FerretDB 1.x gives a client that does not log in
    the URL's user, so every client must log in (as a PostgreSQL role, authMechanism=PLAIN) and gets
    what that role is granted. Over TCP, where pg_hba asks for the password. FerretDB keeps a pool
    per user: idle connections close after a minute (so PostgreSQL's connections follow the orgs
    that are busy, not all that ran once), and a pool stays under an org role's CONNECTION LIMIT."""
    port = ports(state)["postgres"]
    return f"postgresql://127.0.0.1:{port}/ferretdb?pool_max_conn_idle_time=1m&pool_max_conns=16"


def mongo_admin_uri(state: dict[str, object]) -> str:
    """The stack's MongoDB admin URI: FerretDB logged in as PostgreSQL's postgres."""
    password = urllib.parse.quote(str(state["pg_password"]), safe="")
    return f"mongodb://postgres:{password}@127.0.0.1:{ports(state)['ferretdb']}/?authMechanism=PLAIN"


def mongo_operator_uri(state: dict[str, object]) -> str:
    """The operator's MongoDB login: the same PostgreSQL role as its DSN (it grants each org on the
    collection tables it makes through FerretDB)."""
    password = urllib.parse.quote(str(state["operator_pg_password"]), safe="")
    return (
        f"mongodb://{OPERATOR_PG_ROLE}:{password}@127.0.0.1:{ports(state)['ferretdb']}/?authMechanism=PLAIN"
    )


def _chown_to_postgres(path: Path) -> None:
    shutil.chown(path, "postgres", "postgres")


def prepare_postgres(state: dict[str, object]) -> None:
    data = STATE_DIR / "postgres" / "data"
    if (data / "PG_VERSION").exists():
        return
    root = STATE_DIR / "postgres"
    root.mkdir(parents=True, exist_ok=True)
    _chown_to_postgres(root)
    pwfile = root / "pwfile"
    pwfile.write_text(str(state["pg_password"]))
    _chown_to_postgres(pwfile)
    # PostgreSQL refuses to run as root: the instance runs as Debian's postgres user.
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            str(_pg_bin() / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ],
        check=True,
        capture_output=True,
    )
    pwfile.unlink()


def postgres_argv(state: dict[str, object]) -> list[str]:
    return [
        str(_pg_bin() / "postgres"),
        "-D",
        str(STATE_DIR / "postgres" / "data"),
        "-p",
        str(ports(state)["postgres"]),
        "-k",
        str(STATE_DIR / "postgres"),
        "-c",
        "listen_addresses=127.0.0.1",
        # A throwaway test instance: durability is not wanted, speed is.
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=300",
        "-c",
        "shared_buffers=256MB",
        "-c",
        "max_wal_size=4GB",
    ]


def postgres_ready(state: dict[str, object]) -> bool:
    rc = subprocess.run(
        [str(_pg_bin() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(ports(state)["postgres"])]
    ).returncode
    return rc == 0


def create_databases(state: dict[str, object]) -> None:
    """The warehouse database and FerretDB's backend database, once."""
    import psycopg  # the venv's; hack/stack runs on it

    with psycopg.connect(pg_admin_dsn(state, "postgres"), autocommit=True) as conn:
        for db in (PG_DATABASE, "ferretdb"):
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{db}"')
    harden_postgres(state)


DATABASE_ACL_LOCK = "orgpipeline: the database's grants"  # as operator/orgpipeline_operator/database.py


def harden_postgres(state: dict[str, object]) -> None:
    """What a platform's DBA does once (operator/README.md, "Isolation"): the operator's role, with
    the least it needs, and no TEMPORARY for PUBLIC in any database (so that a reader role, which
    may turn its read-only default off, still cannot write anything). Idempotent."""
    import psycopg
    from psycopg import sql

    role, password = sql.Identifier(OPERATOR_PG_ROLE), sql.Literal(str(state["operator_pg_password"]))
    with psycopg.connect(pg_admin_dsn(state, "postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (OPERATOR_PG_ROLE,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(role, password))
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN CREATEROLE NOSUPERUSER PASSWORD {}").format(role, password))
        databases = [
            str(r[0]) for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall()
        ]
    for db in databases:
        with psycopg.connect(pg_admin_dsn(state, db), autocommit=True) as conn, conn.transaction():
            # The operator's lock on a database's grants (database.DATABASE_ACL_LOCK, an advisory
            # lock of that database): an org made or dropped meanwhile rewrites the same catalog
            # row, and two writers at once fail with 'tuple concurrently updated'.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (DATABASE_ACL_LOCK,))
            conn.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db)))
            if db in (PG_DATABASE, "ferretdb"):
                # CREATE: its schemas. CONNECT and TEMPORARY with the grant option: what it grants
                # each org role (the jobs stage rows in temporary tables).
                conn.execute(
                    sql.SQL(
                        "GRANT CREATE ON DATABASE {db} TO {r}; GRANT CONNECT, TEMPORARY ON DATABASE {db}"
                        " TO {r} WITH GRANT OPTION"
                    ).format(db=sql.Identifier(db), r=role)
                )
            # Large objects are writes any role may make: none for PUBLIC (the pipeline uses none).
            conn.execute(
                "REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea)"
                " FROM PUBLIC"
            )


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return 200 <= resp.status < 300
    except Exception:
        return False


def apiserver_ready(state: dict[str, object]) -> bool:
    pki = STATE_DIR / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return http_ok(f"https://127.0.0.1:{ports(state)['apiserver']}/readyz", ctx)


def kcm_ready(state: dict[str, object]) -> bool:
    # The controllers work once the service-account controller made the default namespace's account.
    kubectl = bindir("kubernetes") / "kubectl"
    rc = subprocess.run(
        [
            str(kubectl),
            "--kubeconfig",
            str(STATE_DIR / "kubeconfig"),
            "get",
            "serviceaccount",
            "default",
            "-n",
            "default",
        ],
        capture_output=True,
    ).returncode
    return rc == 0


def s3_ready(state: dict[str, object]) -> bool:
    return http_ok(f"http://127.0.0.1:{ports(state)['s3']}/health")


def webhook_url(state: dict[str, object]) -> str:
    """Where versitygw posts its bucket notifications: an operator's ORGPIPELINE_WEBHOOK_PORT. The
    token goes as the URL's password (Basic auth): versitygw sends no other header."""
    return f"http://orgpipeline:{state['webhook_token']}@127.0.0.1:{ports(state)['webhook']}/s3/events"


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


_STAND_IN: list[http.server.HTTPServer] = []


def start_webhook_stand_in(state: dict[str, object]) -> None:
    """versitygw posts a test notification to its webhook when it starts and exits when nothing
    answers; the operators come later. Unless one already listens, this answers until it is up."""
    _mkdirs(STATE_DIR / "s3-data", STATE_DIR / "s3-iam", STATE_DIR / "s3-meta")(state)
    port = ports(state)["webhook"]
    if port_open(port):
        return
    server = http.server.HTTPServer(("127.0.0.1", port), _Ok)
    threading.Thread(target=server.serve_forever, name="webhook-stand-in", daemon=True).start()
    _STAND_IN.append(server)


def stop_webhook_stand_in(_: dict[str, object]) -> None:
    while _STAND_IN:
        server = _STAND_IN.pop()
        server.shutdown()
        server.server_close()


def ferretdb_ready(state: dict[str, object]) -> bool:
    return port_open(ports(state)["ferretdb"])


def _mkdirs(*paths: Path) -> Callable[[dict[str, object]], None]:
    def make(_: dict[str, object]) -> None:
        for p in paths:
            p.mkdir(parents=True, exist_ok=True)

    return make


def apiserver_argv(state: dict[str, object]) -> list[str]:
    pki, p = STATE_DIR / "pki", ports(state)
    return [
        str(bindir("kubernetes") / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={p['apiserver']}",
        f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=RBAC",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--allow-privileged=true",
        # How it logs in to a kubelet (kubectl logs; ORGPIPELINE_NODE=kubelet): the admin's certificate.
        f"--kubelet-client-certificate={pki / 'admin.crt'}",
        f"--kubelet-client-key={pki / 'admin.key'}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,LimitRanger,ResourceQuota,PodSecurity",
        "--max-requests-inflight=1000",
        "--max-mutating-requests-inflight=500",
        "--v=1",
    ]


def write_kubeconfigs(state: dict[str, object]) -> None:
    """The admin's (for users and tests) and kube-controller-manager's own."""
    port = ports(state)["apiserver"]
    write_kubeconfig(STATE_DIR / "kubeconfig", STATE_DIR / "pki", "admin", port)
    write_kubeconfig(STATE_DIR / "kcm.kubeconfig", STATE_DIR / "pki", "kcm", port)


def kcm_argv(state: dict[str, object]) -> list[str]:
    pki, p = STATE_DIR / "pki", ports(state)
    kubeconfig = STATE_DIR / "kcm.kubeconfig"
    return [
        str(bindir("kubernetes") / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={p['kcm']}",
        "--leader-elect=false",
        "--controllers=*",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        "--concurrent-cron-job-syncs=5",
        "--concurrent-job-syncs=10",
        "--v=1",
    ]


SERVERS = [
    Server(
        "postgres",
        postgres_argv,
        postgres_ready,
        "postgres",
        user="postgres",
        prepare=prepare_postgres,
        after_start=create_databases,
        stop_signal=signal.SIGINT,
    ),
    Server(
        "ferretdb",
        lambda s: [
            str(bindir("ferretdb") / "ferretdb"),
            f"--listen-addr=127.0.0.1:{ports(s)['ferretdb']}",
            f"--postgresql-url={ferretdb_backend_url(s)}",
        ],
        ferretdb_ready,
        "ferretdb",
        # Go's collector took a fifth of FerretDB's CPU while it took a 200,000-row load (perf:
        # gcBgMarkWorker and allocation assists); collecting at 5x the live heap instead of 2x
        # cut FerretDB's CPU per document by about a fifth, for ~90 MB of memory.
        # No libpq defaults either: a client that does not log in has no PostgreSQL identity.
        env={"GOGC": "400", "PGUSER": "ferretdb-anonymous", "PGPASSWORD": "", "PGPASSFILE": "/dev/null"},
        # A FerretDB started before with a user in its URL (anonymous clients were that user) goes.
        restart_on_new_argv=True,
    ),
    Server(
        "s3",
        lambda s: [
            str(bindir("versitygw") / "versitygw"),
            "--access",
            S3_ACCESS_KEY,
            "--secret",
            str(s["s3_secret"]),
            "--port",
            f"127.0.0.1:{ports(s)['s3']}",
            "--health",
            "/health",
            "--iam-dir",
            str(STATE_DIR / "s3-iam"),
            "--event-webhook-url",
            webhook_url(s),
            "posix",
            # Metadata (etags, bucket policies) in files, not xattrs: ext4 caps an xattr at 4 KiB,
            # which a bucket policy with a statement per org outgrows at about 18 orgs.
            "--sidecar",
            str(STATE_DIR / "s3-meta"),
            str(STATE_DIR / "s3-data"),
        ],
        s3_ready,
        "s3",
        prepare=start_webhook_stand_in,
        after_start=stop_webhook_stand_in,
    ),
    Server(
        "etcd",
        lambda s: [
            str(bindir("etcd") / "etcd"),
            "--name=orgpipeline",
            f"--data-dir={STATE_DIR / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{ports(s)['etcd']}",
            f"--advertise-client-urls=http://127.0.0.1:{ports(s)['etcd']}",
            f"--listen-peer-urls=http://127.0.0.1:{ports(s)['etcd_peer']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ports(s)['etcd_peer']}",
            f"--initial-cluster=orgpipeline=http://127.0.0.1:{ports(s)['etcd_peer']}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=8589934592",
            "--log-level=warn",
        ],
        lambda s: http_ok(f"http://127.0.0.1:{ports(s)['etcd']}/health"),
        "etcd",
    ),
    Server(
        "kube-apiserver", apiserver_argv, apiserver_ready, "apiserver", prepare=write_kubeconfigs, timeout=90
    ),
    Server("kube-controller-manager", kcm_argv, kcm_ready, "kcm", timeout=90),
]
KUBE_SERVERS = {"etcd", "kube-apiserver", "kube-controller-manager"}


def active_servers() -> list[Server]:
    return [s for s in SERVERS if not (EXISTING_CLUSTER and s.name in KUBE_SERVERS)]


def start(server: Server, state: dict[str, object]) -> None:
    pid = running_pid(server.name)
    if pid is not None and server.restart_on_new_argv and _cmdline(pid) != server.argv(state):
        stop(server)
        pid = None
    if pid is None:
        pid = _launch(server, state)
    if not server.ready(state):
        # Just launched, or alive but not answering yet: its full start-up time before it failed.
        _wait_ready(server, state, pid)
    if server.after_start:
        server.after_start(state)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")
    except OSError:
        return []


def _launch(server: Server, state: dict[str, object]) -> int:
    port = ports(state)[server.port_key]
    if port_open(port):
        raise StackError(
            f"{server.name}: port {port} is taken by another process; run `hack/stack down --purge`"
        )
    if server.prepare:
        server.prepare(state)
    argv = server.argv(state)
    if server.user:
        argv = ["runuser", "-u", server.user, "--", *argv]
    log = logfile(server.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile(server.name).parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=STATE_DIR,
            env={**os.environ, **server.env},
        )
    pidfile(server.name).write_text(str(proc.pid))
    return proc.pid


def _wait_ready(server: Server, state: dict[str, object], pid: int) -> None:
    deadline = time.monotonic() + server.timeout
    while time.monotonic() < deadline:
        if running_pid(server.name) is None:
            raise StackError(
                f"{server.name} exited during start-up; log: {logfile(server.name)}\n  "
                + "\n  ".join(_tail(logfile(server.name)))
            )
        if server.ready(state):
            print(f"stack: {server.name} ready on 127.0.0.1:{ports(state)[server.port_key]}", flush=True)
            return
        time.sleep(0.3)
    raise StackError(f"{server.name} not ready after {server.timeout:.0f}s; log: {logfile(server.name)}")


def _tail(path: Path, n: int = 5) -> list[str]:
    try:
        return path.read_text(errors="replace").strip().splitlines()[-n:]
    except OSError:
        return []


def stop(server: Server) -> None:
    pid = running_pid(server.name)
    if pid is None:
        pidfile(server.name).unlink(missing_ok=True)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, server.stop_signal)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and running_pid(server.name):
        time.sleep(0.2)
    if running_pid(server.name):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
    pidfile(server.name).unlink(missing_ok=True)
    print(f"stack: {server.name} stopped", flush=True)


# --------------------------------------------------------------------------- commands


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Serialises `up`/`down`: several test runs may ask for the stack at the same moment."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def environment(state: dict[str, object]) -> dict[str, str]:
    p = ports(state)
    kubeconfig = os.environ.get("KUBECONFIG", "") if EXISTING_CLUSTER else str(STATE_DIR / "kubeconfig")
    return {
        "KUBECONFIG": kubeconfig,
        "ORGPIPELINE_MONGO_URI": mongo_admin_uri(state),
        "ORGPIPELINE_POSTGRES_DSN": pg_admin_dsn(state),
        # The operator's own login (not a superuser); ORGPIPELINE_POSTGRES_DSN stays the superuser's,
        # for the command line and the tests' checks.
        "ORGPIPELINE_OPERATOR_POSTGRES_DSN": pg_operator_dsn(state),
        "ORGPIPELINE_OPERATOR_MONGO_URI": mongo_operator_uri(state),
        "ORGPIPELINE_S3_ENDPOINT": f"http://127.0.0.1:{p['s3']}",
        "ORGPIPELINE_S3_ACCESS_KEY": S3_ACCESS_KEY,
        "ORGPIPELINE_S3_SECRET_KEY": str(state["s3_secret"]),
        # For an operator that receives versitygw's notifications (as ORGPIPELINE_WEBHOOK_PORT/_TOKEN;
        # one at a time: the port is fixed when the stack is made).
        "ORGPIPELINE_STACK_WEBHOOK_PORT": str(p["webhook"]),
        "ORGPIPELINE_STACK_WEBHOOK_TOKEN": str(state["webhook_token"]),
        "ORGPIPELINE_STACK_BIN": ":".join(str(bindir(n)) for n in ("kubernetes", "helm", "promql")),
        **(_node_environment(state) if NODE else {}),
    }


def _node_environment(state: dict[str, object]) -> dict[str, str]:
    import node

    return node.job_environment(state)


def cmd_up() -> None:
    if EXISTING_CLUSTER and not os.environ.get("KUBECONFIG"):
        raise StackError("ORGPIPELINE_USE_EXISTING_CLUSTER=1 needs KUBECONFIG pointing at the cluster")
    started = time.monotonic()
    build_all()
    with locked():
        state = load_state()
        if not EXISTING_CLUSTER:
            ensure_certs()
        for server in active_servers():
            start(server, state)
        if NODE:
            import node  # the real node: hack/node.py

            node.up(state)
    print(f'stack: up in {time.monotonic() - started:.1f}s; `eval "$(hack/stack env)"` to use it', flush=True)


def cmd_down(purge: bool) -> None:
    with locked():
        if (STATE_DIR / "node").exists():
            import node

            node.down()
        for server in reversed(SERVERS):
            stop(server)
        if purge:
            for child in STATE_DIR.iterdir():
                if child.name != "lock":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            print(f"stack: purged {STATE_DIR}")


def cmd_status() -> int:
    if not (STATE_DIR / "state.json").exists():
        print("stack: not created; `hack/stack up` starts it")
        return 1
    state = load_state()
    healthy = True
    for server in active_servers():
        pid = running_pid(server.name)
        ok = bool(pid) and server.ready(state)
        healthy &= ok
        port = ports(state)[server.port_key]
        print(
            f"{server.name:<24} {'ready' if ok else ('not ready' if pid else 'stopped'):<10} "
            f"pid={pid or '-':<8} port={port:<6} log={logfile(server.name)}"
        )
    if NODE:
        import node

        healthy &= node.status(state)
    return 0 if healthy else 1


def cmd_env(as_json: bool) -> None:
    env = environment(load_state())
    if as_json:
        print(json.dumps(env))
        return
    for key, value in env.items():
        if key != "ORGPIPELINE_STACK_BIN":
            print(f"export {key}='{value}'")
    print(f'export PATH="{env["ORGPIPELINE_STACK_BIN"]}:$PATH"')


def main(argv: list[str]) -> int:
    verb = argv[0] if argv else "status"
    try:
        if verb == "up":
            cmd_up()
        elif verb == "down":
            cmd_down(purge="--purge" in argv)
        elif verb == "status":
            return cmd_status()
        elif verb == "env":
            cmd_env(as_json="--json" in argv)
        elif verb == "build":
            build_all()
        else:
            print("usage: hack/stack up|down [--purge]|status|env [--json]|build", file=sys.stderr)
            return 2
    except StackError as exc:
        print(f"stack: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
