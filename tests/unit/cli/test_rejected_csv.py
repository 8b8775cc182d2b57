"""`rejected -o csv`: the uploader's text, with formula-leading fields neutralised."""

from __future__ import annotations

from orgpipeline_cli.manage.rejected import safe_csv_text


def test_rejected_rows_keep_their_text_unless_a_field_starts_like_a_formula() -> None:
    assert safe_csv_text("O1,-5,2024-01-15,a - b") == "O1,-5,2024-01-15,a - b"
    assert safe_csv_text('O1,"=1+1","x, y"') == 'O1,\'=1+1,"x, y"'
    assert safe_csv_text('O2,"two\nlines",@x') == 'O2,"two\nlines",\'@x'
