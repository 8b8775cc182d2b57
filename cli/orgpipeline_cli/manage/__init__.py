"""Management commands (issue 5): status, quality, audit, metrics, alerts, validate, retention.

The seed's `data_pipeline_manager.py`, as subcommands of `orgpipeline`. They read the stores the
data plane writes (and the cluster, when KUBECONFIG names one); only `retention` changes anything.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from orgpipeline_cli.manage import (
        governance,
        health,
        history,
        integrity,
        rejected,
        reports,
        runnow,
        seedschemas,
    )

    reports.register(app)
    history.register(app)
    integrity.register(app)
    seedschemas.register(app)
    governance.register(app)
    rejected.register(app)
    runnow.register(app)
    health.register(app)
