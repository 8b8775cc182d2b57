"""Warehouse stage: the org's PostgreSQL schema, COPY loading, the runs and files tables."""
