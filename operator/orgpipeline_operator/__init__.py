"""Kopf operator reconciling OrgPipeline resources into per-org namespaces, CronJobs and Jobs."""
