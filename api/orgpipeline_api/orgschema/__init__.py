"""The org's PostgreSQL schema, shared by the jobs (which write it) and the operator (which
provisions it): tables and bookkeeping DDL, column type changes, advisory locks, masked views."""
