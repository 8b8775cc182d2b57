"""Settings come from the environment, validated once, with one message naming every problem."""

from __future__ import annotations

import pytest
from orgpipeline_operator import operator_settings

GOOD = {
    "ORGPIPELINE_POSTGRES_DSN": "postgresql://admin:pw@db.example:5433/orgs",
    "ORGPIPELINE_MONGO_URI": "mongodb://mongo:27017/",
    "ORGPIPELINE_S3_ENDPOINT": "http://s3:9000",
    "ORGPIPELINE_S3_ACCESS_KEY": "ak",
    "ORGPIPELINE_S3_SECRET_KEY": "sk",
}


def test_defaults_and_derived_values() -> None:
    s = operator_settings.from_env(GOOD)
    assert s.job_image == "orgpipeline:dev"
    assert s.jobs_postgres_hostport == ("db.example", "5433")
    assert s.postgres_dbname == "orgs"
    assert s.egress_ports == [5433, 9000, 27017]


def test_job_overrides() -> None:
    s = operator_settings.from_env(
        {**GOOD, "ORGPIPELINE_JOB_POSTGRES_HOST": "pg.svc:5432", "ORGPIPELINE_WORKERS": "4"}
    )
    assert s.jobs_postgres_hostport == ("pg.svc", "5432") and s.workers == 4


def test_every_problem_is_named_at_once() -> None:
    env = {**GOOD, "ORGPIPELINE_WORKERS": "many", "ORGPIPELINE_S3_ENDPOINT": "s3:9000"}
    del env["ORGPIPELINE_MONGO_URI"]
    with pytest.raises(operator_settings.SettingsError) as err:
        operator_settings.from_env(env)
    assert "ORGPIPELINE_MONGO_URI is required" in str(err.value)
    assert "ORGPIPELINE_WORKERS='many' is not a int" in str(err.value)


def test_bad_values_are_refused() -> None:
    with pytest.raises(operator_settings.SettingsError, match="must be an http"):
        operator_settings.from_env({**GOOD, "ORGPIPELINE_S3_ENDPOINT": "s3:9000"})
    with pytest.raises(operator_settings.SettingsError, match="PULL_POLICY"):
        operator_settings.from_env({**GOOD, "ORGPIPELINE_JOB_IMAGE_PULL_POLICY": "Sometimes"})


def test_webhook_needs_a_token_and_sane_limits() -> None:
    assert operator_settings.from_env(GOOD).webhook_port == 0  # off unless asked for
    with pytest.raises(operator_settings.SettingsError, match="ORGPIPELINE_WEBHOOK_TOKEN of at least 16"):
        operator_settings.from_env({**GOOD, "ORGPIPELINE_WEBHOOK_PORT": "8443"})
    with pytest.raises(operator_settings.SettingsError, match="ORGPIPELINE_WEBHOOK_TOKEN of at least 16"):
        operator_settings.from_env(
            {**GOOD, "ORGPIPELINE_WEBHOOK_PORT": "8443", "ORGPIPELINE_WEBHOOK_TOKEN": "short"}
        )
    with pytest.raises(operator_settings.SettingsError, match="ORGPIPELINE_WEBHOOK_MAX_BYTES"):
        operator_settings.from_env({**GOOD, "ORGPIPELINE_WEBHOOK_MAX_BYTES": "10"})
    with pytest.raises(operator_settings.SettingsError, match="DEBOUNCE_SECONDS must be >= 0"):
        operator_settings.from_env({**GOOD, "ORGPIPELINE_WEBHOOK_DEBOUNCE_SECONDS": "60"})
    s = operator_settings.from_env(
        {**GOOD, "ORGPIPELINE_WEBHOOK_PORT": "8443", "ORGPIPELINE_WEBHOOK_TOKEN": "0123456789abcdef"}
    )
    assert (s.webhook_port, s.webhook_token, s.webhook_debounce_seconds) == (8443, "0123456789abcdef", 1.0)


def test_the_tenant_role_is_bound_to_the_operators_own_service_account() -> None:
    from orgpipeline_operator import runtime

    with pytest.raises(operator_settings.SettingsError, match="ORGPIPELINE_SERVICE_ACCOUNT is required"):
        operator_settings.from_env({**GOOD, "ORGPIPELINE_TENANT_ROLE": "op-tenant"})
    s = operator_settings.from_env(
        {**GOOD, "ORGPIPELINE_TENANT_ROLE": "op-tenant", "ORGPIPELINE_SERVICE_ACCOUNT": "op",
         "ORGPIPELINE_NAMESPACE": "ops"}
    )  # fmt: skip
    rt = runtime.Runtime.__new__(runtime.Runtime)
    rt.settings = s
    assert rt.job_settings.tenant_binding == ("op-tenant", "ops", "op")
    rt.settings = operator_settings.from_env(GOOD)  # unset: no RoleBinding child
    assert rt.job_settings.tenant_binding is None
