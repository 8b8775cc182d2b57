"""Management commands (issue 5): status, quality, audit, metrics, alerts, validate, retention.

The seed's `data_pipeline_manager.py`, as subcommands of `orgpipeline`. They read the stores the
data plane writes (and the cluster, when KUBECONFIG names one); only `retention` changes anything.
"""
