"""Which org namespaces get a Secret watch (watch.NamespacedWatches): those the Namespace watch
reports, not being deleted, of an OrgPipeline this process handles (a shard leaves the others')."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from orgpipeline_operator import cache, kube, naming, watch


def _namespace(name: str, pipeline: str, **meta: Any) -> dict[str, Any]:
    return {
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {naming.LABEL_PIPELINE: pipeline}, **meta},
    }


def _pipeline(name: str, event: str = "ADDED") -> None:
    cache.CACHE.pipeline(event, {"metadata": {"name": name, "uid": f"uid-{name}"}, "spec": {"orgId": name}})


def test_only_the_live_namespaces_of_handled_pipelines_are_watched() -> None:
    w = watch.NamespacedWatches(
        cast("kube.Kube", None), "v1", "Secret", naming.MANAGED_SELECTOR, lambda _: True
    )
    try:
        _pipeline("nsw-mine")
        w._seen("org-nsw-mine", "nsw-mine")
        w._seen("org-nsw-other", "nsw-other")  # another shard's OrgPipeline
        assert w.watching() == {"org-nsw-mine"}
        _pipeline("nsw-other")  # seen after its namespace (as at start-up): the next sync takes it
        w._sync(set(w._live))
        assert w.watching() == {"org-nsw-mine", "org-nsw-other"}
        w._seen("org-nsw-other", None)  # being deleted, or gone
        assert w.watching() == {"org-nsw-mine"}
        w._keep_only(set())  # a fresh listing without it
        assert w.watching() == set()
        w.observe("MODIFIED", _namespace("org-nsw-mine", "nsw-mine"))  # from the watch's thread
        w._loop.run_until_complete(_settle())
        assert w.watching() == {"org-nsw-mine"}
        w.observe(
            "MODIFIED", _namespace("org-nsw-mine", "nsw-mine", deletionTimestamp="2026-01-01T00:00:00Z")
        )
        w._loop.run_until_complete(_settle())
        assert w.watching() == set()
    finally:
        for name in ("nsw-mine", "nsw-other"):
            _pipeline(name, "DELETED")
        for task in list(w._tasks.values()):
            task.cancel()
        w._loop.run_until_complete(_settle())
        w._loop.close()


async def _idle(_namespace: str) -> None:
    await asyncio.Event().wait()


async def _settle() -> None:
    """Lets the callbacks scheduled from another thread run (call_soon_threadsafe)."""
    return None


def _binding(namespace: str, **meta: Any) -> dict[str, Any]:
    return {"kind": "RoleBinding", "metadata": {"name": naming.ROLE_BINDING, "namespace": namespace, **meta}}


def test_with_a_tenant_role_a_namespace_is_watched_only_while_the_operators_binding_is_there() -> None:
    """Before the RoleBinding that grants the operator its access exists, a watch is only refused
    (403) and retried: it starts when the binding is seen, stops when it goes, and starts again
    (with a fresh listing) when the heal has made it again."""
    w = watch.NamespacedWatches(
        cast("kube.Kube", None), "v1", "Secret", naming.MANAGED_SELECTOR, lambda _: True, bound=True
    )
    try:
        _pipeline("nsw-bound")
        w._seen("org-nsw-bound", "nsw-bound")
        assert w.watching() == set()  # the namespace is there, the binding not yet
        w.observe("ADDED", _binding("org-nsw-bound"))
        w.observe("ADDED", {"kind": "RoleBinding", "metadata": {"name": "other", "namespace": "org-nsw-x"}})
        w._loop.run_until_complete(_settle())
        assert w.watching() == {"org-nsw-bound"}
        w.observe("DELETED", _binding("org-nsw-bound"))
        w._loop.run_until_complete(_settle())
        assert w.watching() == set()
        w.observe("ADDED", _binding("org-nsw-bound"))
        w._loop.run_until_complete(_settle())
        assert w.watching() == {"org-nsw-bound"}
        # A fresh listing of the RoleBindings without it: gone while the watch was down.
        w.observe("LISTED", {"kind": "RoleBinding", "keys": set()})
        w._loop.run_until_complete(_settle())
        assert w.watching() == set()
    finally:
        _pipeline("nsw-bound", "DELETED")
        for task in list(w._tasks.values()):
            task.cancel()
        w._loop.run_until_complete(_settle())
        w._loop.close()
