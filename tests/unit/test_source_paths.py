"""An org's files: its prefix is a folder and a table's pattern does not reach into the folders
below it, so no org lists (or is woken by) another org's files."""

from orgpipeline_api import source_paths


def test_a_prefix_without_its_slash_is_the_same_folder() -> None:
    assert source_paths.folder("org-1") == "org-1/"
    assert source_paths.folder("org-1/") == "org-1/"
    assert source_paths.folder("") == ""


def test_a_neighbours_folder_is_not_under_the_prefix() -> None:
    key = "org-10/orders_1.csv"
    assert not key.startswith(source_paths.folder("org-1"))
    assert key.startswith(source_paths.folder("org-10"))


def test_the_pattern_does_not_cross_into_nested_folders() -> None:
    assert source_paths.matches("orders_1.csv", "*.csv")
    assert not source_paths.matches("b/orders_1.csv", "*.csv")  # e.g. another org's prefix data/b/
    assert source_paths.matches("2024/orders_1.csv", "*/orders_*.csv")
    assert not source_paths.matches("2024/01/orders_1.csv", "*/orders_*.csv")
    assert not source_paths.matches("customers_1.csv", "orders_*.csv")


def test_an_object_outside_the_source_is_named() -> None:
    inside = source_paths.outside_source
    assert inside("s3://uploads/org-1/orders_1.csv", "uploads", "org-1/") is None
    assert inside("s3://uploads/org-1/in/orders_1.csv", "uploads", "org-1") is None
    assert inside("s3://any/orders_1.csv", "any", "") is None  # a bucket of the org's own
    for uri in (
        "s3://uploads/org-2/orders_1.csv",  # another org's folder
        "s3://uploads/org-10/orders_1.csv",  # a neighbour sharing the string prefix
        "s3://uploads/Org-1/orders_1.csv",
        "s3://other/org-1/orders_1.csv",
        "s3://uploads/orders_1.csv",
        "s3://uploads/org-1/../org-2/orders_1.csv",
        "s3://uploads/org-1/%2e%2e/org-2/orders_1.csv",
        "s3://uploads/org-1%2f..%2forg-2/orders_1.csv",
        "s3://uploads/org-1/\uff0e\uff0e\uff0forg-2/orders_1.csv",  # full-width . and /
        "s3://uploads/org-1\\..\\org-2\\orders_1.csv",
        "s3://uploads/org-1//orders_1.csv",
        "s3://uploads/org-1/./orders_1.csv",
        "s3://uploads/org-1/orders\x00.csv",
        "s3://uploads/org-1/",
        "s3://uploads",
    ):
        assert inside(uri, "uploads", "org-1/") is not None, uri
