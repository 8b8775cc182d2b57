"""The outbox's stored form: compressed, and readable in both its forms (a rerun of a newer release
must replay rows an older one left as plain BSON)."""

import bson
from orgpipeline_jobs.warehouse import outbox


def _documents(n: int) -> bytes:
    return b"".join(
        bson.encode({"_id": f"org_1_t_{i}|v1", "version": 1, "note": "text ü \x00 end", "n": i})
        for i in range(n)
    )


def test_pack_round_trips_and_shrinks_repetitive_documents() -> None:
    plain = _documents(2000)
    stored = outbox.pack(plain)
    assert outbox.unpack(stored) == plain
    assert len(stored) < len(plain) / 4


def test_plain_bson_of_an_older_release_is_read_as_it_is() -> None:
    plain = _documents(3)
    assert outbox.unpack(plain) == plain
    assert bson.decode_all(outbox.unpack(plain))[2]["n"] == 2


def test_empty_batch_round_trips() -> None:
    assert outbox.unpack(outbox.pack(b"")) == b""
