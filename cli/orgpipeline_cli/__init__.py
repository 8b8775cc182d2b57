"""The `orgpipeline` command line."""
