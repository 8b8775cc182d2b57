"""Composite keys: the seed's readable format, and never two tuples for one key."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from orgpipeline_jobs import keys

values = st.text(min_size=1, max_size=12)
tuples = st.lists(values, min_size=1, max_size=3)


def test_ordinary_values_keep_the_seed_format() -> None:
    key = keys.composite_key("123", "orders", ["ORD001", "CUST456", "2024-01-15"])
    assert key == "org_123_orders_ORD001_CUST456_2024-01-15"


def test_the_seed_collision_is_gone() -> None:
    assert keys.composite_key("1", "t", ["A_B", "C"]) != keys.composite_key("1", "t", ["A", "B_C"])


def test_long_keys_are_hashed_and_bounded() -> None:
    key = keys.composite_key("1", "t", ["x" * 500])
    assert key.startswith("org_1_t_~sha256~") and len(key) <= keys.MAX_KEY_LENGTH


@settings(max_examples=300, deadline=None)
@given(tuples, tuples)
def test_injective(a: list[str], b: list[str]) -> None:
    if len(a) == len(b) and a != b:
        assert keys.composite_key("1", "t", a) != keys.composite_key("1", "t", b)


@settings(max_examples=300, deadline=None)
@given(tuples, tuples)
def test_injective_with_hashing(a: list[str], b: list[str]) -> None:
    """A tiny length limit makes most keys hashed: readable and hashed keys must still differ."""
    if a != b:
        assert keys.composite_key("1", "t", a, max_length=24) != keys.composite_key(
            "1", "t", b, max_length=24
        )


@settings(max_examples=300, deadline=None)
@given(tuples)
def test_readable_keys_split_back(a: list[str]) -> None:
    key = keys.composite_key("1", "t", a, max_length=10_000)
    assert keys.split_key("1", "t", key) == a
