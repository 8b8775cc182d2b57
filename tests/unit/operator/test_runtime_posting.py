"""Events posted outside Kopf's handlers (the file-arrival loop runs outside any): posted from a copy
of a handler's context, never a LookupError that the caller would take for its own failure."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import kopf
from kopf._core.engines import posting
from orgpipeline_operator import runtime

OBJ = {"apiVersion": "orgpipeline.io/v1alpha1", "kind": "OrgPipeline", "metadata": {"name": "p", "uid": "u"}}


def test_an_event_outside_kopfs_context_is_posted_from_a_handlers_context() -> None:
    loop = asyncio.new_event_loop()
    queue: asyncio.Queue[posting.K8sEvent] = asyncio.Queue()
    handler = contextvars.Context()

    def in_handler() -> None:  # what Kopf sets before it calls a handler
        posting.settings_var.set(kopf.OperatorSettings())
        posting.event_queue_loop_var.set(loop)
        posting.event_queue_var.set(queue)
        runtime.capture_posting()

    saved = runtime._POSTING
    runtime._POSTING = None
    try:
        runtime.warn(OBJ, reason="Early", message="before any handler: dropped, no error")
        handler.run(in_handler)
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        failures: list[BaseException] = []

        def outside() -> None:  # a plain thread: none of Kopf's context variables are set
            try:
                runtime.warn(OBJ, reason="FileArrivalRunFailed", message="orders: gone")
            except BaseException as exc:
                failures.append(exc)

        worker = threading.Thread(target=outside)
        worker.start()
        worker.join(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        assert failures == []
        event = queue.get_nowait()
        assert (event.reason, event.message, event.type) == (
            "FileArrivalRunFailed",
            "orders: gone",
            "Warning",
        )
    finally:
        runtime._POSTING = saved
        loop.close()
