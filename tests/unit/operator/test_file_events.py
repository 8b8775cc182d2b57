"""S3 notifications -> the tables they start, batched: pure functions, no server."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from orgpipeline_api import triggers, v1alpha1
from orgpipeline_operator import builders, file_events
from orgpipeline_operator.file_events import ObjectCreated, Watch

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "org-123.yaml"
TOKEN = "s3cr3t-token-0123456789"


def record(bucket: str, key: str, event: str = "s3:ObjectCreated:Put") -> dict[str, Any]:
    return {"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 10}}}


def body(*records: dict[str, Any]) -> bytes:
    return json.dumps({"Records": list(records)}).encode()


def pipeline(
    name: str, org: str, bucket: str, prefix: str, *tables: dict[str, Any], **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {
            "orgId": org,
            "source": {"bucket": bucket, "prefix": prefix},
            "tables": list(tables),
            **spec,
        },
    }


def owns_all(_pipeline: str, _org: str) -> bool:
    return True


# --- authentication ----------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer  {TOKEN} ", True),
        (basic("orgpipeline", TOKEN), True),  # a sender that only takes a URL: https://x:<token>@host/
        (basic(TOKEN, "nope"), False),  # the token as user name is not the password
        ("Bearer wrong", False),
        (f"Token {TOKEN}", False),
        ("Basic !!!notbase64", False),
        ("", False),
        (None, False),
    ],
)
def test_authorized_takes_bearer_or_basic_password(header: str | None, ok: bool) -> None:
    assert file_events.authorized(header, TOKEN) is ok


def test_no_token_configured_authorizes_nobody() -> None:
    assert not file_events.authorized("Bearer ", "")


# --- parsing -----------------------------------------------------------------------------------


def test_parse_minio_and_aws_records_only_object_created() -> None:
    got = file_events.parse_notification(
        body(
            record("uploads", "org-1/orders_1.csv"),
            record("uploads", "org-1/orders%202.csv", "ObjectCreated:CompleteMultipartUpload"),  # AWS
            record("uploads", "org-1/orders_3.csv", "s3:ObjectRemoved:Delete"),
            record("uploads", "org-1/a+b.csv", "s3:ObjectCreated:Copy"),
        )
    )
    assert got == [
        ObjectCreated("uploads", "org-1/orders_1.csv"),
        ObjectCreated("uploads", "org-1/orders 2.csv"),  # keys arrive URL-encoded
        ObjectCreated("uploads", "org-1/a b.csv"),
    ]


def test_parse_sns_envelope_and_eventbridge() -> None:
    sns = {"Type": "Notification", "Message": body(record("b1", "p/x.csv")).decode()}
    assert file_events.parse_notification(json.dumps(sns).encode()) == [ObjectCreated("b1", "p/x.csv")]
    bridge = {
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": "b2"}, "object": {"key": "k.csv"}},
    }
    assert file_events.parse_notification(json.dumps(bridge).encode()) == [ObjectCreated("b2", "k.csv")]


def test_parse_reads_the_uploader_of_every_sender() -> None:
    minio = record("uploads", "org-1/orders_1.csv")
    minio["userIdentity"] = {"principalId": "org-1-uploader"}
    versitygw = record("uploads", "org-1/orders_2.csv")
    versitygw["userIdentity"] = {"PrincipalId": "acct-7"}  # versitygw's spelling
    aws = record("uploads", "org-1/orders_3.csv", "ObjectCreated:Put")
    aws["userIdentity"] = {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"}
    nobody = record("uploads", "org-1/orders_4.csv")
    nobody["userIdentity"] = "not an object"
    got = file_events.parse_notification(body(minio, versitygw, aws, nobody))
    assert [o.principal for o in got] == ["org-1-uploader", "acct-7", "AWS:AIDAJDPLRKLG7UEXAMPLE", ""]
    sns = {"Type": "Notification", "Message": body(aws).decode()}
    assert (
        file_events.parse_notification(json.dumps(sns).encode())[0].principal == "AWS:AIDAJDPLRKLG7UEXAMPLE"
    )
    bridge = {
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": "b2"}, "object": {"key": "k.csv"}, "requester": "123456789012"},
    }
    assert file_events.parse_notification(json.dumps(bridge).encode()) == [
        ObjectCreated("b2", "k.csv", "123456789012")
    ]


def test_a_batch_job_names_each_files_uploader() -> None:
    _, spec = v1alpha1.load_manifest(EXAMPLE)
    target = builders.Target("org-123", "uid-1", spec, builders.JobSettings(image="img:1"))
    batches = file_events.Batches(quiet=1, max_wait=10)
    table = ("org-123", spec.tables[0].name)
    batches.add(table, ["in/orders_1.csv"], 0, "w", {"in/orders_1.csv": "alice"})
    batches.add(table, ["in/orders_2.csv", "in/orders_3.csv"], 0.5, "w", {"in/orders_2.csv": "bob"})
    (batch,) = batches.due(2, lambda _t: False)
    trigger = batch.trigger("uploads")
    job = builders.build_file_arrival_job(target, spec.tables[0], batch.batch_id, "3 new objects", trigger)
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ORGPIPELINE_TRIGGERED_BY"] == "alice, bob"
    assert json.loads(env["ORGPIPELINE_TRIGGER_UPLOADERS"]) == {
        "in/orders_1.csv": "alice",
        "in/orders_2.csv": "bob",
    }


def test_sns_subscription_confirmation_is_nothing_but_names_its_url() -> None:
    confirm = json.dumps(
        {"Type": "SubscriptionConfirmation", "SubscribeURL": "https://sns.example/confirm"}
    ).encode()
    assert file_events.parse_notification(confirm) == []
    assert file_events.sns_subscribe_url(confirm) == "https://sns.example/confirm"
    assert file_events.sns_subscribe_url(body(record("b", "k"))) is None


def test_parse_test_event_is_nothing() -> None:
    test_event = {"Service": "S3", "Event": "s3:TestEvent", "Bucket": "Test-Bucket"}
    assert file_events.parse_notification(json.dumps(test_event).encode()) == []


@pytest.mark.parametrize("raw", [b"not json", b"[1,2]", b'{"Records": 5}', b'{"Records": [7]}', b"\xff\xfe"])
def test_parse_refuses_what_is_not_a_notification(raw: bytes) -> None:
    with pytest.raises(file_events.BadNotification):
        file_events.parse_notification(raw)


def test_parse_skips_records_without_bucket_or_key() -> None:
    bad = [{"eventName": "s3:ObjectCreated:Put", "s3": "x"}, {"eventName": "s3:ObjectCreated:Put", "s3": {}}]
    assert file_events.parse_notification(json.dumps({"Records": bad}).encode()) == []


# --- routing -----------------------------------------------------------------------------------


ORDERS = {"name": "orders"}
CUSTOMERS = {"name": "customers", "filePattern": "cust-*.csv"}


def test_watches_skip_suspended_schedule_only_and_not_owned() -> None:
    pipelines = [
        pipeline("org-a", "a", "uploads", "a/", ORDERS, {**CUSTOMERS, "trigger": "schedule"}),
        pipeline("org-b", "b", "uploads", "b/", ORDERS, suspend=True),
        pipeline(
            "org-c",
            "c",
            "uploads",
            "c/",
            {**ORDERS, "suspend": True},
            {**CUSTOMERS, "trigger": "fileArrival"},
        ),
        pipeline("org-a-dup", "a", "uploads", "a/", ORDERS),
    ]
    got = file_events.watches(pipelines, lambda name, org: name != "org-a-dup")
    assert got == [
        Watch("org-a", "a", "uploads", "a/", "orders", "orders_*.csv"),
        Watch("org-c", "c", "uploads", "c/", "customers", "cust-*.csv"),
    ]


def test_route_maps_bucket_prefix_and_pattern_to_tables() -> None:
    watched = file_events.watches(
        [
            pipeline("org-a", "a", "uploads", "a/", ORDERS, CUSTOMERS),
            pipeline("org-b", "b", "other", "", ORDERS),
        ],
        owns_all,
    )
    routed = file_events.route(
        [
            ObjectCreated("uploads", "a/orders_1.csv"),
            ObjectCreated("uploads", "a/orders_2.csv"),
            ObjectCreated("uploads", "a/cust-1.csv"),
            ObjectCreated("uploads", "a/readme.txt"),  # under the prefix, no table's pattern
            ObjectCreated("uploads", "z/orders_1.csv"),  # no org's prefix
            ObjectCreated("unknown", "a/orders_1.csv"),  # no org's bucket
            ObjectCreated("other", "orders_9.csv"),  # empty prefix: the whole bucket
        ],
        watched,
    )
    assert routed.runs == {
        ("org-a", "orders"): ["a/orders_1.csv", "a/orders_2.csv"],
        ("org-a", "customers"): ["a/cust-1.csv"],
        ("org-b", "orders"): ["orders_9.csv"],
    }
    assert routed.ignored == 3


def test_one_orgs_file_never_starts_another_orgs_run() -> None:
    # org-b's prefix lies inside org-a's, and org-a's pattern would match the relative name.
    watched = file_events.watches(
        [
            pipeline("org-a", "a", "uploads", "data/", {"name": "orders", "filePattern": "*/orders_*.csv"}),
            pipeline("org-b", "b", "uploads", "data/b/", ORDERS),
            pipeline("org-c", "c", "uploads", "data/c", ORDERS),  # the folder data/c/, not data/cc/
        ],
        owns_all,
    )
    routed = file_events.route(
        [ObjectCreated("uploads", "data/b/orders_1.csv"), ObjectCreated("uploads", "data/x/orders_2.csv")],
        watched,
    )
    assert routed.runs == {
        ("org-b", "orders"): ["data/b/orders_1.csv"],
        ("org-a", "orders"): ["data/x/orders_2.csv"],
    }


def test_a_pattern_does_not_reach_into_a_nested_folder() -> None:
    watched = file_events.watches(
        [pipeline("org-a", "a", "uploads", "data", {"name": "orders", "filePattern": "*.csv"})], owns_all
    )
    routed = file_events.route(
        [ObjectCreated("uploads", "data/orders_1.csv"), ObjectCreated("uploads", "data/b/orders_2.csv")],
        watched,
    )
    assert routed.runs == {("org-a", "orders"): ["data/orders_1.csv"]}


def test_a_prefix_two_orgs_claim_starts_nothing() -> None:
    watched = file_events.watches(
        [
            pipeline("org-a", "a", "uploads", "shared/", ORDERS),
            pipeline("org-b", "b", "uploads", "shared/", ORDERS),
        ],
        owns_all,
    )
    routed = file_events.route([ObjectCreated("uploads", "shared/orders_1.csv")], watched)
    assert routed.runs == {}
    assert routed.ambiguous == 1


# --- batching ----------------------------------------------------------------------------------


def never_active(_table: file_events.TableKey) -> bool:
    return False


def test_a_burst_becomes_one_batch_once_quiet() -> None:
    batches = file_events.Batches(quiet=1.0, max_wait=30.0)
    table = ("org-a", "orders")
    batches.add(table, ["a/orders_1.csv"], now=0.0, wall="t0")
    batches.add(table, ["a/orders_2.csv", "a/orders_1.csv"], now=0.6, wall="t1")
    assert batches.due(1.2, never_active) == []  # still arriving
    (batch,) = batches.due(1.7, never_active)
    assert batch.keys == ["a/orders_1.csv", "a/orders_2.csv"]
    assert batch.count == 3
    assert batch.opened_at == "t0"
    assert batches.pending() == 0


def test_a_steady_trickle_still_runs_after_max_wait() -> None:
    batches = file_events.Batches(quiet=1.0, max_wait=5.0)
    table = ("org-a", "orders")
    for second in range(6):
        batches.add(table, [f"a/orders_{second}.csv"], now=second * 0.9, wall="t")
    assert [b.count for b in batches.due(5.0, never_active)] == [6]


def test_files_during_an_active_run_wait_for_its_end() -> None:
    batches = file_events.Batches(quiet=0.5, max_wait=5.0)
    table = ("org-a", "orders")
    batches.add(table, ["a/orders_1.csv"], now=0.0, wall="t")
    assert batches.due(10.0, lambda t: t == table) == []
    assert len(batches.due(10.5, never_active)) == 1


def test_a_restored_batch_keeps_its_name_and_takes_later_files() -> None:
    batches = file_events.Batches(quiet=0.5, max_wait=5.0)
    table = ("org-a", "orders")
    batches.add(table, ["a/orders_1.csv"], now=0.0, wall="t0")
    (batch,) = batches.due(1.0, never_active)
    batches.add(table, ["a/orders_2.csv"], now=1.1, wall="t1")
    batches.restore(batch)
    (again,) = batches.due(2.0, never_active)
    assert again.batch_id == batch.batch_id
    assert again.keys == ["a/orders_1.csv", "a/orders_2.csv"] and again.count == 2


def test_batch_reason_names_the_objects_within_a_limit() -> None:
    one = file_events.Batch(("p", "t"), 0, 0, "w")
    one.add(["a/orders_1.csv"], 0)
    assert one.reason("uploads") == "new object s3://uploads/a/orders_1.csv"
    many = file_events.Batch(("p", "t"), 0, 0, "w")
    many.add([f"a/orders_{i:04}.csv" for i in range(file_events.MAX_KEYS_PER_BATCH + 5)], 0)
    text = many.reason("uploads", limit=200)
    assert text.startswith(
        f"{file_events.MAX_KEYS_PER_BATCH + 5} new objects: s3://uploads/a/orders_0000.csv"
    )
    assert len(text) == 200 and text.endswith("...")
    assert many.reason("uploads", limit=100_000).endswith("(+5 more)")


# --- the Job -----------------------------------------------------------------------------------


def test_file_arrival_job_says_why_it_runs_and_is_named_by_its_batch() -> None:
    _, spec = v1alpha1.load_manifest(EXAMPLE)
    target = builders.Target("org-123", "uid-1", spec, builders.JobSettings(image="img:1"))
    job = builders.build_file_arrival_job(target, spec.tables[0], "batch-1", "new object s3://b/k.csv")
    again = builders.build_file_arrival_job(target, spec.tables[0], "batch-1", "new object s3://b/k.csv")
    other = builders.build_file_arrival_job(target, spec.tables[0], "batch-2", "new object s3://b/k.csv")
    name = job["metadata"]["name"]
    assert name == again["metadata"]["name"] != other["metadata"]["name"]
    assert name.startswith(f"ingest-{spec.tables[0].name}-file-") and len(name) <= 63
    assert job["metadata"]["labels"]["orgpipeline.io/run"] == "file-arrival"
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ORGPIPELINE_TRIGGER"] == "file-arrival"
    assert env["ORGPIPELINE_TRIGGERED_BY"] == "system:file-arrival"  # no event named an uploader
    assert env["ORGPIPELINE_TRIGGER_REASON"] == "new object s3://b/k.csv"
    # otherwise the spec every Job of the table has (the CronJob's, the run-now Job's)
    scheduled = builders.build_job_spec(target, spec.tables[0], triggers.SCHEDULE)
    assert {k: v for k, v in job["spec"].items() if k != "template"} == {
        k: v for k, v in scheduled.items() if k != "template"
    }


def test_longest_table_name_gives_a_valid_job_name() -> None:
    from orgpipeline_operator import naming

    assert len(naming.file_job_name("uid", "t" * 40, "b")) == 63


def test_file_arrival_only_table_suspends_its_cronjob() -> None:
    _, spec = v1alpha1.load_manifest(EXAMPLE)
    table = spec.tables[0]
    target = builders.Target("org-123", "uid-1", spec)
    assert builders.build_cronjob(target, table)["spec"]["suspend"] is False
    for trigger, suspended in (("schedule", False), ("both", False), ("fileArrival", True)):
        changed = table.model_copy(update={"trigger": v1alpha1.TableTrigger(trigger)})
        assert builders.build_cronjob(target, changed)["spec"]["suspend"] is suspended


# --- bounds (hostile senders) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 200_000,
        b'{"Records": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b'{"Records": [' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"]}",
    ],
)
def test_nesting_deeper_than_any_sender_is_a_bad_notification(raw: bytes) -> None:
    with pytest.raises(file_events.BadNotification, match="nests deeper"):
        file_events.parse_notification(raw)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    key = "a/" + "[{" * 100 + '\\"]' + ".csv"
    raw = json.dumps({"Records": [record("b", key)]}).encode()
    assert file_events.parse_notification(raw) == [ObjectCreated("b", key)]


def test_a_key_over_s3s_1024_bytes_is_refused() -> None:
    watched = [Watch("p", "o", "b", "", "orders", "orders_*.csv")]
    ok = "orders_" + "x" * (1024 - len("orders_.csv")) + ".csv"
    routed = file_events.route(
        [
            ObjectCreated("b", ok),
            ObjectCreated("b", "orders_" + "x" * 1024 + ".csv"),
            ObjectCreated("b", "orders_" + "é" * 600 + ".csv"),
        ],  # 1,200 bytes in UTF-8
        watched,
    )
    assert routed.runs == {("p", "orders"): [ok]}
    assert routed.refused == 2 and routed.ignored == 0


def test_routing_is_linear_in_the_key_at_3000_orgs() -> None:
    """A notification's largest key (the whole body) is refused at once; keys within S3's limit
    walk the key's folders once (it sliced the key at every length: quadratic)."""
    import time

    watched = [Watch(f"p{i}", f"o{i}", "b", f"org-{i}/in/", "orders", "orders_*.csv") for i in range(3000)]
    index = file_events.Index(watched)
    huge = [ObjectCreated("b", "org-7/in/" + "x" * 250_000)]
    deep = [ObjectCreated("b", "org-7/in/" + "/" * 1000 + "orders_1.csv")] * 300
    slashes = [ObjectCreated("b", "/" * 1024)] * 300
    started = time.perf_counter()
    assert index.route(huge).refused == 1
    assert index.route(deep).ignored == 300 and index.route(slashes).ignored == 300
    assert time.perf_counter() - started < 0.5
    assert index.route([ObjectCreated("b", "org-7/in/orders_1.csv")]).runs == {
        ("p7", "orders"): ["org-7/in/orders_1.csv"]
    }
    assert index.route([ObjectCreated("b", "org-7/in/x/orders_1.csv")]).ignored == 1


def test_files_joining_a_waiting_batch_are_counted_as_coalesced() -> None:
    batches = file_events.Batches(quiet=0.5, max_wait=5.0)
    table = ("org-a", "orders")
    assert batches.add(table, ["a/orders_1.csv"], now=0.0, wall="t") == 0
    assert batches.add(table, ["a/orders_2.csv", "a/orders_3.csv"], now=0.1, wall="t") == 2
    assert batches.due(10.0, lambda t: t == table) == []  # one pending batch while a run is active
    assert batches.pending() == 1
    (batch,) = batches.due(10.0, never_active)
    assert batch.count == 3


def test_parsing_a_hostile_body_is_linear() -> None:
    """Backslashes and quotes that a string-skipping scan would rescan from every quote."""
    import time

    started = time.perf_counter()
    for raw in (b'"' + b'\\"' * 120_000, b'{"Records": "' + b'\\"' * 120_000, b'["' * 120_000):
        with pytest.raises(file_events.BadNotification):
            file_events.parse_notification(raw)
    assert time.perf_counter() - started < 1.0


def test_the_retry_delay_doubles_up_to_its_cap_with_jitter() -> None:
    low = [file_events.retry_delay(n, rand=lambda: 0.0) for n in range(1, 10)]
    high = [file_events.retry_delay(n, rand=lambda: 1.0) for n in range(1, 10)]
    assert high[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(high) == file_events.RETRY_CAP_SECONDS
    assert all(lo == hi / 2 for lo, hi in zip(low, high, strict=True))  # half of it random


def test_a_restored_batch_is_not_due_before_its_back_off() -> None:
    batches = file_events.Batches(quiet=0.5, max_wait=5.0)
    batches.add(("p", "orders"), ["a.csv"], now=0, wall="w")
    (batch,) = batches.due(1.0, lambda _t: False)
    batches.restore(batch, not_before=3.0)
    assert batches.due(2.9, lambda _t: False) == []
    assert batches.due(3.0, lambda _t: False) == [batch]


def test_a_batch_rebuilt_from_the_same_stored_rows_has_the_same_name_and_more_rows_another() -> None:
    """The next leader rebuilds a pending batch from the stored arrivals: the same rows give the
    same Job name (found made: no second run); rows that came later give another (their own run)."""

    def rebuilt(rows: list[int]) -> str:
        batches = file_events.Batches(quiet=0, max_wait=60)
        for row in rows:
            batches.add(
                ("org-a", "orders"), [f"org-a/orders_{row}.csv"], 0.0, "2026-12-06T00:00:00+00:00", rows=[row]
            )
        (batch,) = batches.due(1.0, lambda _: False)
        return batch.batch_id

    assert rebuilt([7, 8]) == rebuilt([7, 8])
    assert rebuilt([7, 8]) != rebuilt([7, 8, 9])
    restored = file_events.Batches(quiet=0, max_wait=60)
    restored.add(("org-a", "orders"), ["k1"], 0.0, "w", rows=[1])
    (batch,) = restored.due(1.0, lambda _: False)
    restored.add(("org-a", "orders"), ["k2"], 2.0, "w2", rows=[2])
    restored.restore(batch)
    (merged,) = restored.due(3.0, lambda _: False)
    assert merged.rows == [1, 2] and merged.keys == ["k1", "k2"]
