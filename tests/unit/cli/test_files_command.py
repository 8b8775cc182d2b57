"""`orgpipeline files retry --file`: which recorded files a name designates."""

from __future__ import annotations

from orgpipeline_cli.manage.files import SourceFileState, matching


def state(key: str, file_id: str, status: str = "quarantined") -> SourceFileState:
    return SourceFileState(key.rsplit("/", 1)[-1], key, file_id, status, {}, None, None, None, None)


FOUND = [
    state("org-1/orders_1.csv", "f_1"),
    state("org-1/2026/orders_1.csv", "f_2"),
    state("org-1/orders_10.csv", "f_3"),
]


def test_a_file_is_named_by_its_name_key_uri_or_id() -> None:
    assert [f.file_id for f in matching(FOUND, "orders_1.csv")] == ["f_1", "f_2"]
    assert [f.file_id for f in matching(FOUND, "org-1/2026/orders_1.csv")] == ["f_2"]
    assert [f.file_id for f in matching(FOUND, "s3://bucket/org-1/orders_10.csv")] == ["f_3"]
    assert [f.file_id for f in matching(FOUND, "f_3")] == ["f_3"]


def test_no_partial_names() -> None:
    assert matching(FOUND, "1.csv") == []
    assert matching(FOUND, "orders_") == []
    assert matching(FOUND, "s3://bucket/orders_1.csv") == []
