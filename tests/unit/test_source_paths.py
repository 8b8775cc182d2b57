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
