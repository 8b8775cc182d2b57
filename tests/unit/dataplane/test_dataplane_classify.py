"""Classification suggestions: each detector on real-looking values, and the rules of a suggestion."""

from __future__ import annotations

import pytest
from orgpipeline_api.v1alpha1 import Classification
from orgpipeline_jobs import classify


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (classify.is_email, ["a.b@example.com", "x+tag@mail.co.uk"], ["a@b", "not an email", "@x.com"]),
        (
            classify.is_phone,
            ["+49 30 1234567", "(555) 123-4567", "0049301234567"],
            ["12345", "5551234567", "2024-01-15"],
        ),
        (
            classify.is_iban,
            ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"],
            ["DE89370400440532013001", "XX00"],
        ),
        (
            classify.is_card_number,
            ["4111 1111 1111 1111", "5500-0000-0000-0004"],
            ["4111111111111112", "0000000000000000"],
        ),
        (classify.is_ip_address, ["192.168.0.1", "2001:db8::1"], ["192.168.0", "999.1.1.1", "10"]),
        (
            classify.is_person_name,
            ["Ada Lovelace", "José María Pérez", "O'Brien", "Jean-Luc"],
            ["ada lovelace", "R2D2", ""],
        ),
    ],
)
def test_detectors(check: object, good: list[str], bad: list[str]) -> None:
    assert all(check(v) for v in good), [v for v in good if not check(v)]  # type: ignore[operator]
    assert not any(check(v) for v in bad), [v for v in bad if check(v)]  # type: ignore[operator]


def test_suggestions_raise_the_class_with_evidence_and_never_lower_it() -> None:
    emails = [f"user{i}@example.com" for i in range(9)] + ["n/a"]
    s = classify.suggest("contact_email", Classification.internal, emails)
    assert s.suggested == Classification.pii and s.changes
    best = s.evidence[0]
    assert (best.detector, best.matched, best.values, best.share) == ("email addresses", 9, 10, 0.9)
    cards = ["4111 1111 1111 1111", "5500 0000 0000 0004", "3400 0000 0000 009"]
    assert classify.suggest("card", Classification.pii, cards).suggested == Classification.sensitive
    assert classify.suggest("card", Classification.sensitive, emails).suggested == Classification.sensitive
    assert not classify.suggest("x", Classification.public, emails[:2]).changes  # too few values
    half = [f"user{i}@example.com" for i in range(5)] + [f"text {i}" for i in range(5)]
    assert not classify.suggest("mixed", Classification.internal, half).changes  # below 80%


def test_dates_of_birth_need_the_name_or_a_spread_of_decades() -> None:
    births = ["1950-03-02", "1971-12-30", "1988-07-14", "2001-01-01"]
    assert (
        classify.suggest("born_on", Classification.internal, births[1:3] * 2).suggested == Classification.pii
    )
    assert classify.suggest("joined", Classification.internal, births).suggested == Classification.pii
    orders = ["2024-01-15", "2024-02-01", "2023-11-30", "2024-03-03"]
    assert not classify.suggest("order_date", Classification.internal, orders).changes
    old_events = ["2001-01-15", "2002-02-01", "2003-11-30"]
    assert not classify.suggest("created", Classification.internal, old_events).changes


def test_person_names_need_a_person_column() -> None:
    names = ["Ada Lovelace", "Grace Hopper", "Alan Turing"]
    assert classify.suggest("customer_name", Classification.public, names).suggested == Classification.pii
    assert classify.suggest("first_name", Classification.public, ["Ada", "Grace", "Alan"]).changes
    assert not classify.suggest(
        "product_name", Classification.public, ["Blue Widget", "Red Lamp", "Oak Desk"]
    ).changes
    assert not classify.suggest("city", Classification.public, ["New York", "Paris", "Berlin"]).changes
