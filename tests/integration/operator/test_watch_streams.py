"""The per-namespace watches' transport (kube.AsyncStreams) against the real API server: thousands of
org namespaces are watched over a few HTTP/2 connections, not a TLS connection each (the operator's
memory and the API server's handshakes at 3,000 orgs), and a listing is answered while watches stay
open on the same connections."""

from __future__ import annotations

import asyncio
from typing import Any

from orgpipeline_operator import kube

WATCHES = 150


async def _watch_and_list(api: kube.Kube, namespace: str) -> tuple[int, dict[str, Any], list[str]]:
    streams = api.streams()
    opened: list[str] = []

    async def follow() -> None:
        query = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "60"}
        async for event in streams.stream(kube.path("v1", "Secret", namespace), query, kube.METADATA, 90):
            opened.append(str(event.get("type")))

    tasks = [asyncio.create_task(follow()) for _ in range(WATCHES)]
    try:
        await asyncio.sleep(0)  # every watch asked for before the listing
        listing = await asyncio.wait_for(
            streams.get(kube.path("v1", "ConfigMap", namespace), {"limit": "5"}, kube.METADATA_LIST), 30
        )
        connections = streams.connections()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await streams.close()
    return connections, listing, opened


def test_many_namespace_watches_share_a_few_connections_and_a_listing_is_not_held_up(
    api: kube.Kube,
) -> None:
    # The listing must come while the watches are open (they end after 60 s; it is given 30).
    connections, listing, _ = asyncio.run(_watch_and_list(api, "default"))
    assert connections <= -(-WATCHES // kube.STREAMS_PER_CONNECTION) + 1, connections
    assert listing.get("kind") == "PartialObjectMetadataList"


def test_a_refused_watch_is_an_api_error_with_the_servers_reason(api: kube.Kube) -> None:
    async def refused() -> kube.ApiError:
        streams = api.streams()
        try:
            async for _ in streams.stream(
                "/apis/nothing.example/v1/things", {"watch": "1"}, kube.METADATA, 10
            ):
                pass
        except kube.ApiError as exc:
            return exc
        finally:
            await streams.close()
        raise AssertionError("no error")

    exc = asyncio.run(refused())
    assert exc.status == 404
