"""PostgreSQL tenant escapes (issue 22, deliverables 1 and 7), tried as a tenant would: with org A's
own Secret (its login, its reader's login) against org B, the operator (its own, non-superuser
role), and an administrator running the command line with the superuser's DSN.

- Code A plants in its own schema (triggers, a column default) runs when the operator reconciles a
  classification change and when `run`, `export`, `retention` and `validate` run with the
  superuser's DSN: it runs as A (through a throwaway delegate of A's role), so a `RESET ROLE` in it
  gains nothing: A never becomes superuser, never gets CREATEROLE or B's role, B is unchanged.
- A's login and A's reader reach nothing of B (schema, views, tables, functions, roles, look-alike
  names); A's reader writes nothing, even with its read-only default turned off.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from operator_helpers import (
    Kubectl,
    Operator,
    operator_env,
    pipeline,
    running_operator,
    wait_for,
    wait_ready,
)
from orgpipeline_api import store_names
from orgpipeline_api.orgschema import tenant
from orgpipeline_api.v1alpha1 import parse_manifest
from orgpipeline_jobs import pipeline as dataplane
from orgpipeline_jobs.settings import Settings
from orgpipeline_operator import kube, naming

LABEL = "orgpipeline.io/isolation-pg-test"
CLI = str(Path(sys.executable).parent / "orgpipeline")
ORDERS = {
    "name": "orders",
    "businessKeys": ["order_id"],
    "columns": [
        {"name": "order_id", "type": "text", "required": True},
        {"name": "email", "type": "text", "classification": "pii"},
        {"name": "amount", "type": "decimal(10,2)", "classification": "public"},
    ],
}
CSV = "order_id,email,amount\nO1,alice@b.example,10\nO2,bob@b.example,20\n"


@pytest.fixture(scope="module")
def kubectl(stack: Any) -> Kubectl:
    return Kubectl(os.environ["PATH"], stack.kubeconfig)


@pytest.fixture(scope="module")
def api(kube_api: Any) -> kube.Kube:
    return kube.Kube(kube_api)


@pytest.fixture(scope="module")
def operator(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator with its own PostgreSQL role (no superuser), for this file's OrgPipelines only."""
    env = operator_env(stack, f"{LABEL}=true")
    with running_operator(env, tmp_path_factory.mktemp("operator") / "operator.log") as op:
        yield op


def _manifest(org: str) -> dict[str, Any]:
    manifest = pipeline(org, tables=["orders"])
    manifest["metadata"]["labels"] = {LABEL: "true"}
    manifest["spec"]["tables"] = [ORDERS]
    return manifest


def _secret(kubectl: Kubectl, org: str, name: str) -> dict[str, str]:
    def found() -> dict[str, Any] | None:
        done = kubectl("get", "secret", name, "-n", f"org-{org}", "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    secret = wait_for(found, what=f"Secret {name} of {org}")
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _login(stack: Any, user: str, password: str) -> str:
    return psycopg.conninfo.make_conninfo(stack.postgres_dsn, user=user, password=password)


class Org:
    def __init__(self, org_id: str, manifest: dict[str, Any], dsn: str, reader_dsn: str) -> None:
        self.id, self.manifest, self.dsn, self.reader_dsn = org_id, manifest, dsn, reader_dsn
        self.schema, self.views = store_names.pg_schema(org_id), store_names.pg_view_schema(org_id)
        self.role, self.reader = store_names.pg_role(org_id), store_names.pg_reader_role(org_id)


@pytest.fixture(scope="module")
def orgs(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, stack: Any, mongo: Any, tmp_path_factory: Any
) -> Iterator[tuple[Org, Org]]:
    """Orgs A and B, made by the operator, each with one run of `orders` (by the superuser's DSN)."""
    import uuid

    suffix = uuid.uuid4().hex[:8]
    made = []
    tmp = tmp_path_factory.mktemp("orgs")
    try:
        for name in ("pga", "pgb"):
            org = f"{name}{suffix}"
            manifest = _manifest(org)
            kubectl.apply(manifest)
            made.append(org)
        for org in made:
            wait_ready(api, f"org-{org}", timeout=60)
        out = []
        for org in made:
            creds, reader = _secret(kubectl, org, naming.SECRET), _secret(kubectl, org, "orgpipeline-reader")
            dsn = _login(stack, creds["ORGPIPELINE_POSTGRES_USER"], creds["ORGPIPELINE_POSTGRES_PASSWORD"])
            o = Org(org, _manifest(org), dsn, _login(stack, reader["PGUSER"], reader["PGPASSWORD"]))
            source = tmp / org
            source.mkdir()
            (source / "orders_1.csv").write_text(CSV)
            _, spec = parse_manifest(o.manifest)
            report = dataplane.run_table(Settings.from_env(), spec, "orders", None, str(source)).as_json()
            assert report["result"] == "Succeeded", report
            out.append(o)
        yield out[0], out[1]
    finally:
        for org in made:
            kubectl("delete", "orgpipeline", f"org-{org}", "--ignore-not-found", "--timeout=60s", check=False)
            mongo["orgpipeline"][store_names.mongo_collection(org, "orders")].drop()


def _victim_state(pg: Any, b: Org) -> dict[str, Any]:
    """Everything of B a successful escape would change: its role, memberships, data, views."""
    return {
        "role": pg.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolpassword FROM pg_authid"
            " WHERE rolname = %s",
            (b.role,),
        ).fetchall(),
        "members": pg.execute(
            "SELECT r.rolname, m.rolname FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid"
            " JOIN pg_roles m ON m.oid = am.member WHERE r.rolname IN (%s, %s)"
            " AND NOT starts_with(m.rolname, %s) ORDER BY 1, 2",
            (b.role, b.reader, tenant.DELEGATE_PREFIX),
        ).fetchall(),
        "rows": pg.execute(
            f'SELECT order_id, email, amount FROM "{b.schema}".raw_orders ORDER BY 1'
        ).fetchall(),
        "classes": pg.execute(
            f'SELECT table_name, column_name, classification FROM "{b.schema}".pipeline_classification'
            " ORDER BY 1, 2"
        ).fetchall(),
        "relations": pg.execute(
            "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN (%s, %s) ORDER BY 1, 2",
            (b.schema, b.views),
        ).fetchall(),
    }


def _privileges(pg: Any, role: str) -> tuple[Any, ...]:
    row = pg.execute(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication,"
        " (SELECT array_agg(r.rolname ORDER BY r.rolname) FROM pg_auth_members am"
        "  JOIN pg_roles r ON r.oid = am.roleid WHERE am.member = a.oid)"
        " FROM pg_roles a WHERE rolname = %s",
        (role,),
    ).fetchone()
    assert row is not None
    return tuple(row)


PLANT = """
CREATE TABLE {a}.loot (n serial, at text, who text, gained text[]);
CREATE FUNCTION {a}.escape(at text) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
  back text := current_user;
  who text;
  gained text[] := '{{}}';
BEGIN
  RESET ROLE;  -- to the session's login: what a SET ROLE from a privileged session hands over
  who := current_user;
  BEGIN EXECUTE format('ALTER ROLE %I SUPERUSER', {role_a}); gained := array_append(gained, 'superuser');
  EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE format('ALTER ROLE %I CREATEROLE', {role_a}); gained := array_append(gained, 'createrole');
  EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE format('GRANT %I TO %I', {role_b}, {role_a}); gained := array_append(gained, 'member of b');
  EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L', {role_b}, 'stolen');
    gained := array_append(gained, 'b password');
  EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', {role_a} || '_twin', 'x');
    gained := array_append(gained, 'new role');
  EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE format('CREATE TABLE %I.%I AS SELECT * FROM %I.raw_orders', {schema_a},
      'stolen_' || md5(random()::text), {schema_b});
    gained := array_append(gained, 'read b');
  EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE format('DELETE FROM %I.raw_orders', {schema_b}); gained := array_append(gained, 'wrote b');
  EXCEPTION WHEN OTHERS THEN NULL; END;
  EXECUTE format('SET ROLE %I', back);
  -- A grant to the login (the delegate) ties it to A's objects: DROP ROLE alone would refuse it.
  EXECUTE format('GRANT SELECT ON %I.loot TO %I', {schema_a}, session_user);
  INSERT INTO {a}.loot (at, who, gained) VALUES (at, who, gained);
END $f$;
CREATE FUNCTION {a}.on_write() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  PERFORM {a}.escape(TG_TABLE_NAME);
  RETURN NULL;
END $f$;
CREATE FUNCTION {a}.stamp() RETURNS timestamptz LANGUAGE plpgsql AS $f$
BEGIN
  PERFORM {a}.escape('default');
  RETURN now();
END $f$;
ALTER TABLE {a}.pipeline_classification ALTER COLUMN updated_at SET DEFAULT {a}.stamp();
CREATE FUNCTION {a}.checked() RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
  PERFORM {a}.escape('check');
  RETURN true;
END $f$;
-- Checked again on every row when a column changes type.
ALTER TABLE {a}.raw_orders ADD CONSTRAINT planted CHECK ({a}.checked());
CREATE FUNCTION {a}.visible() RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
  PERFORM {a}.escape('policy');
  RETURN true;
END $f$;
-- A row security policy runs on reads too (`status` reads the runs), for the owner as well (FORCE).
ALTER TABLE {a}.pipeline_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE {a}.pipeline_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY planted ON {a}.pipeline_runs USING ({a}.visible());
"""
TRIGGERED = (
    "pipeline_classification",
    "pipeline_runs",
    "pipeline_exports",
    "raw_orders",
    "raw_orders_change_log",
)


def _plant(a: Org, b: Org) -> None:
    """As A's own login: code in A's own schema that tries, when someone else runs it, to escape."""

    def lit(v: str) -> str:
        return "'" + v.replace("'", "''") + "'"

    with psycopg.connect(a.dsn, autocommit=True) as conn:
        conn.execute(
            PLANT.format(
                a=f'"{a.schema}"',
                role_a=lit(a.role),
                role_b=lit(b.role),
                schema_a=lit(a.schema),
                schema_b=lit(b.schema),
            )
        )
        owned = {
            str(r[0])
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tableowner = current_user",
                (a.schema,),
            ).fetchall()
        }
        for table in set(TRIGGERED) & owned:
            conn.execute(
                f'CREATE TRIGGER escape AFTER INSERT OR UPDATE OR DELETE ON "{a.schema}"."{table}"'
                f' FOR EACH STATEMENT EXECUTE FUNCTION "{a.schema}".on_write()'
            )


def _loot(a: Org) -> list[tuple[str, str, list[str]]]:
    with psycopg.connect(a.dsn, autocommit=True) as conn:
        rows = conn.execute(f'SELECT at, who, gained FROM "{a.schema}".loot ORDER BY n').fetchall()
    return [(str(r[0]), str(r[1]), list(r[2])) for r in rows]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line with the superuser's DSN (the stack's ORGPIPELINE_POSTGRES_DSN)."""
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120, env=os.environ)


def test_the_operator_logs_in_without_superuser(stack: Any) -> None:
    with psycopg.connect(stack.operator_postgres_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication FROM pg_roles"
            " WHERE rolname = current_user"
        ).fetchone()
    assert row == (False, True, False, False, False)


def test_an_orgs_own_login_is_used_as_is(orgs: tuple[Org, Org], pg: Any) -> None:
    """A job with the org's own DSN costs nothing extra: no query, no delegate."""
    a, _ = orgs
    with psycopg.connect(a.dsn, autocommit=True) as conn, tenant.session(a.dsn, a.id, admin=conn) as own:
        assert own is conn
        assert own.execute("SELECT session_user::text").fetchone() == (a.role,)
    # Another org's login cannot borrow A: it may not make a delegate.
    _, b = orgs
    with (
        psycopg.connect(b.dsn, autocommit=True) as conn,
        pytest.raises(tenant.TenantSessionRefused, match="may not make a delegate"),
        tenant.session(b.dsn, a.id, admin=conn),
    ):
        pass


def test_a_tenants_code_that_never_returns_holds_the_caller_until_the_deadline_only(
    orgs: tuple[Org, Org], stack: Any
) -> None:
    """Code of A's that catches cancels and statement timeouts (a trigger could) ends with its
    backend at the deadline: the operator's worker is back, its own session intact."""
    a, _ = orgs
    hang = (
        "DO $$ BEGIN LOOP BEGIN PERFORM pg_sleep(0.2); EXCEPTION WHEN query_canceled THEN NULL; END;"
        " END LOOP; END $$"
    )
    dsn = stack.operator_postgres_dsn
    with psycopg.connect(dsn, autocommit=True) as admin:
        started = time.monotonic()
        with (
            pytest.raises(psycopg.OperationalError, match="terminating connection"),
            tenant.session(dsn, a.id, admin=admin, deadline=2) as own,
        ):
            own.execute("SET statement_timeout = 0")
            own.execute(hang)
        assert time.monotonic() - started < 20
        assert admin.execute("SELECT 1").fetchone() == (1,)
        left = admin.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (tenant.DELEGATE_PREFIX + a.id,)
        ).fetchall()
        assert left == []


def _look_alikes(name: str) -> list[str]:
    return [
        name,
        name.upper(),
        name + " ",
        name + "\u200b",  # zero-width space
        name.replace("o", "\u043e", 1),  # Cyrillic o
        name.replace("_", "-"),
    ]


def test_an_orgs_login_reaches_nothing_of_another_org(orgs: tuple[Org, Org], pg: Any) -> None:
    a, b = orgs
    pg.execute(f"CREATE FUNCTION \"{b.schema}\".secret() RETURNS text LANGUAGE sql AS $$ SELECT 'b' $$")
    pg.execute(f'ALTER FUNCTION "{b.schema}".secret() OWNER TO "{b.role}"')
    before = _victim_state(pg, b)
    with psycopg.connect(a.dsn, autocommit=True) as conn:
        for schema in (b.schema, b.views):
            for name in _look_alikes(schema):
                for statement in (
                    f'SELECT * FROM "{name}".raw_orders',
                    f'SELECT * FROM "{name}".orders',
                    f'SELECT * FROM "{name}".pipeline_classification',
                    f'SELECT "{name}".secret()',
                    f'CREATE TABLE "{name}".planted (v text)',
                    f'CREATE VIEW "{name}".planted AS SELECT 1',
                    f'CREATE FUNCTION "{name}".planted() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$',
                    f"INSERT INTO \"{name}\".raw_orders (org_id, composite_key) VALUES ('x', 'x')",
                    f'DELETE FROM "{name}".raw_orders',
                    f'DROP TABLE "{name}".raw_orders',
                    f'ALTER TABLE "{name}".raw_orders OWNER TO "{a.role}"',
                    f'CREATE TRIGGER t AFTER INSERT ON "{name}".raw_orders EXECUTE FUNCTION "{a.schema}".x()',
                ):
                    with pytest.raises(
                        (
                            psycopg.errors.InsufficientPrivilege,
                            psycopg.errors.InvalidSchemaName,
                            psycopg.errors.UndefinedTable,
                            psycopg.errors.UndefinedFunction,
                        )
                    ):
                        conn.execute(statement)
        # B's roles, the operator's and the superuser: none to be had.
        for role in (b.role, b.reader, "orgpipeline_operator", "postgres"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f'SET ROLE "{role}"')
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f'GRANT "{role}" TO "{a.role}"')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"ALTER ROLE \"{b.role}\" PASSWORD 'stolen'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f'CREATE SCHEMA "{b.schema}x"')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f'ALTER SCHEMA "{a.schema}" RENAME TO "{b.schema}x"')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE ROLE orgpipeline_tmp_evil LOGIN")
    assert _victim_state(pg, b) == before
    assert _privileges(pg, a.role)[:5] == (False, False, False, False, False)


def test_an_orgs_login_cannot_read_write_or_alter_the_operators_file_arrivals(
    orgs: tuple[Org, Org], stack: Any, pg: Any
) -> None:
    """`orgpipeline_operator.file_arrivals` (every org's pending uploads, in the operator's own
    schema): an org's login can neither read another org's arrivals there, nor add, change or
    forget one (which would start or drop another org's runs), nor change the table."""
    from orgpipeline_operator import arrivals, database, operator_settings
    from orgpipeline_operator.file_events import ObjectCreated

    a, b = orgs
    settings = operator_settings.from_env(operator_env(stack, f"{LABEL}=true"))
    db = database.Databases(settings.postgres_dsn, settings.mongo_uri, settings.mongo_db)
    scope = f"{LABEL}=escape-{a.id}"
    try:
        (stored,) = arrivals.record(db, scope, [ObjectCreated("landing", f"org-{b.id}/orders_9.csv", "b")])
        table = '"orgpipeline_operator".file_arrivals'
        with psycopg.connect(a.dsn, autocommit=True) as conn:
            for statement in (
                f"SELECT * FROM {table}",
                f"SELECT count(*) FROM {table}",
                f"INSERT INTO {table} (scope, bucket, key) VALUES ('{scope}', 'landing', 'org-{b.id}/x.csv')",
                f"UPDATE {table} SET key = 'org-{a.id}/stolen.csv'",
                f"DELETE FROM {table}",
                f"TRUNCATE {table}",
                f"ALTER TABLE {table} ADD COLUMN planted text",
                f'ALTER TABLE {table} OWNER TO "{a.role}"',
                f"DROP TABLE {table}",
                f'GRANT SELECT ON {table} TO "{a.role}"',
                'CREATE TABLE "orgpipeline_operator".planted (v text)',
                f'CREATE TRIGGER t BEFORE INSERT ON {table} EXECUTE FUNCTION "{a.schema}".x()',
                "SELECT nextval('\"orgpipeline_operator\".file_arrivals_id_seq')",
            ):
                with pytest.raises(
                    (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction)
                ) as refused:
                    conn.execute(statement)
                assert (
                    not isinstance(refused.value, psycopg.errors.UndefinedFunction) or "TRIGGER" in statement
                )
        assert [(r.id, r.obj) for r in arrivals.pending(db, scope)] == [(stored.id, stored.obj)]
        columns = pg.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'planted'",
            (table,),
        ).fetchone()
        assert columns == (0,)
    finally:
        arrivals.forget(db, [r.id for r in arrivals.pending(db, scope)])
        db.close()


def test_a_reader_writes_nothing_even_with_read_only_off(orgs: tuple[Org, Org], pg: Any) -> None:
    a, b = orgs
    before = _victim_state(pg, b)
    with psycopg.connect(a.reader_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)  # it reads its views
        for off in (
            "SET default_transaction_read_only = off",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            "SET transaction_read_only = off",
        ):
            conn.execute(off)
        conn.execute(f'ALTER ROLE "{a.reader}" SET default_transaction_read_only = off')  # its own default
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("off",)
        # The views: no write privilege (what refuses a write once a view is updatable, as an org
        # may make its views with an INSTEAD OF trigger), and not automatically updatable.
        granted = conn.execute("SELECT has_table_privilege('orders', 'INSERT,UPDATE,DELETE,TRUNCATE')")
        assert granted.fetchone() == (False,)
        for statement in (
            "INSERT INTO orders (composite_key) VALUES ('x')",
            "UPDATE orders SET amount = 0",
            "DELETE FROM orders",
        ):
            with pytest.raises(
                (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectNotInPrerequisiteState)
            ):
                conn.execute(statement)
        refused = (
            "CREATE TEMP TABLE scratch (v text)",
            "CREATE TEMP VIEW scratch AS SELECT 1",
            "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
            f'CREATE FUNCTION "{a.views}".f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$',
            "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
            f'CREATE TABLE "{a.views}".x (v text)',
            "CREATE TABLE public.x (v text)",
            f'CREATE VIEW "{a.views}".x AS SELECT 1',
            "SELECT lo_create(0)",
            "SELECT lo_from_bytea(0, 'x')",
            f'SELECT * FROM "{a.schema}".raw_orders',
            f'SELECT * FROM "{b.views}".orders',
            f'SELECT * FROM "{b.schema}".raw_orders',
            f'SET ROLE "{a.role}"',
        )
        for statement in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    # Nor in any other database it may connect to.
    databases = [
        str(r[0]) for r in pg.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall()
    ]
    for db in databases:
        dsn = psycopg.conninfo.make_conninfo(a.reader_dsn, dbname=db)
        try:
            conn = psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError:
            continue  # may not connect: nothing to write there either
        with conn:
            conn.execute("SET default_transaction_read_only = off")
            for statement in ("CREATE TEMP TABLE scratch (v text)", "CREATE TABLE public.x (v text)"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
    pg.execute(f'ALTER ROLE "{a.reader}" SET default_transaction_read_only = on')
    assert _victim_state(pg, b) == before


def test_code_a_tenant_plants_in_its_schema_runs_as_the_tenant_only(
    orgs: tuple[Org, Org], kubectl: Kubectl, api: kube.Kube, stack: Any, pg: Any, tmp_path: Path
) -> None:
    a, b = orgs
    # An export before the code is planted (its audit is the operator's: nothing of A's runs there).
    first = _cli("export", "--org-id", a.id, "--table", "orders", "--output", str(tmp_path / "0.csv"))
    assert first.returncode == 0, first.stderr
    before_b, before_a = _victim_state(pg, b), _privileges(pg, a.role)
    assert before_a[:5] == (False, False, False, False, False)
    _plant(a, b)

    # 1. The operator reconciles a classification and a type change: it changes the column type
    # (the check constraint runs on every row), records the classification in A's
    # pipeline_classification (the trigger and the column default run) and re-makes the views.
    planted = len(_loot(a))  # A's own login ran the check once, adding it
    manifest = a.manifest
    manifest["spec"]["tables"][0]["columns"][1]["classification"] = "public"
    manifest["spec"]["tables"][0]["columns"][2]["type"] = "decimal(12,2)"
    kubectl.apply(manifest)

    def reconciled() -> bool:
        return any(at in ("pipeline_classification", "default") for at, _, _ in _loot(a)[planted:])

    wait_for(reconciled, timeout=60, what="the operator to record A's new classification")
    wait_ready(api, f"org-{a.id}", timeout=60)
    with psycopg.connect(a.reader_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT email FROM orders ORDER BY 1").fetchall() == [
            ("alice@b.example",),
            ("bob@b.example",),
        ]

    # 2. The command line with the superuser's DSN, in A's schema: run, export, retention, validate.
    source = tmp_path / "source"
    source.mkdir()
    (source / "orders_2.csv").write_text(CSV.replace(",20\n", ",25\n"))
    _, spec = parse_manifest(manifest)
    assert dataplane.run_table(Settings.from_env(), spec, "orders", None, str(source)).result == "Succeeded"
    done = _cli("export", "--org-id", a.id, "--table", "orders", "--output", str(tmp_path / "a.csv"))
    assert done.returncode == 0, done.stderr
    manifest_file = tmp_path / "a.yaml"
    manifest_file.write_text(yaml.safe_dump(manifest))
    done = _cli("retention", "--org-id", a.id, "-f", str(manifest_file), "-o", "json")
    assert done.returncode == 0, done.stderr
    done = _cli("validate", "--org-id", a.id, "-o", "json")
    assert done.returncode in (0, 1), done.stderr
    policy_runs = sum(at == "policy" for at, _, _ in _loot(a))
    for command in ("status", "quality", "audit", "rejected"):  # reads, as A's delegate too
        extra = ("--table", "orders") if command == "rejected" else ()
        done = _cli(command, "--org-id", a.id, *extra, "-o", "json")
        assert done.returncode == 0, (command, done.stderr)
    assert sum(at == "policy" for at, _, _ in _loot(a)) > policy_runs  # `status` read the runs

    loot = _loot(a)[planted:]
    for at, who, gained in loot:
        # RESET ROLE got back to a delegate of A's role, or to A's own login (the operator logs in
        # as A when it has just set A's password), never to the operator or the superuser ...
        assert gained == [], (at, who, gained)  # ... which could do nothing A cannot.
        assert who == a.role or who.startswith(tenant.DELEGATE_PREFIX + a.id), (at, who)
    places = {at for at, _, _ in loot}
    assert {"pipeline_classification", "default", "check", "policy", "pipeline_runs"} <= places
    assert "raw_orders" in places
    # The export audit is the operator's (orgaudit_<org>): A plants nothing there, so it runs nothing.
    assert "pipeline_exports" not in places
    with psycopg.connect(a.dsn, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(
            f'CREATE TRIGGER escape AFTER INSERT ON "orgaudit_{a.id}".pipeline_exports'
            f' FOR EACH STATEMENT EXECUTE FUNCTION "{a.schema}".on_write()'
        )
    assert _privileges(pg, a.role) == before_a
    assert pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (a.role + "_twin",)).fetchone() is None
    assert _victim_state(pg, b) == before_b
    # No delegate outlives its session.
    left = pg.execute(
        "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (tenant.DELEGATE_PREFIX + a.id,)
    ).fetchall()
    assert left == []
    done = _cli("compliance", "--org-id", a.id, "-o", "json")
    assert done.returncode == 0, done.stderr
    exports = json.loads(done.stdout)["exports"]
    # The export is recorded with who asked, and as which role it ran.
    assert exports[0]["db_role"] == f"postgres as {a.role}"

    # 3. Deleting A (deletionPolicy Delete) drops its schemas and roles, planted code and all, with
    # the operator's own role; B keeps everything.
    kubectl("delete", "orgpipeline", f"org-{a.id}", "--timeout=60s")

    def gone() -> bool:
        return not pg.execute(
            "SELECT 1 FROM pg_roles WHERE rolname IN (%s, %s) UNION ALL"
            " SELECT 1 FROM pg_namespace WHERE nspname IN (%s, %s)",
            (a.role, a.reader, a.schema, a.views),
        ).fetchall()

    wait_for(gone, timeout=60, what="A's roles and schemas to be dropped")
    assert _victim_state(pg, b) == before_b
