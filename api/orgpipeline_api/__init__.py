"""The OrgPipeline custom resource: one pydantic model that is the contract of the CRD."""
