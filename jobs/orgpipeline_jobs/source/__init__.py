"""Source stage: find the table's files (S3 or local), and stream a CSV file in typed-free batches."""
