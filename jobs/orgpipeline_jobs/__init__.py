"""Data plane: CSV files in S3 -> MongoDB raw landing -> PostgreSQL warehouse."""
