"""data_hash: stable under formatting and column order; changed_fields names what changed."""

from __future__ import annotations

from orgpipeline_jobs import hashing, values


def test_hash_ignores_key_order() -> None:
    assert hashing.data_hash({"a": 1, "b": "x"}) == hashing.data_hash({"b": "x", "a": 1})


def test_hash_sees_value_changes_and_types() -> None:
    assert hashing.data_hash({"a": 1}) != hashing.data_hash({"a": 2})
    assert hashing.data_hash({"a": 1}) != hashing.data_hash({"a": "1"})


def test_canonical_values_make_formatting_irrelevant() -> None:
    parse_int = values.parser_for("integer")
    parse_dec = values.parser_for("decimal(10,2)")
    first = {"n": parse_int("042"), "amount": parse_dec("99.9")}
    second = {"n": parse_int(" 42 "), "amount": parse_dec("99.90")}
    assert hashing.data_hash(first) == hashing.data_hash(second)


def test_changed_fields() -> None:
    assert hashing.changed_fields({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": None}) == ["b"]
