"""amdfleet.tables.table: one list of rows to aligned text."""

from __future__ import annotations

from amdfleet.tables import table


def test_columns_have_a_header_rule_and_align_each_column() -> None:
    text = table(("name", "value"), [("a", "1.50"), ("longer", "12.00")], align=("left", "right"))
    assert text.splitlines() == [
        "name      value",
        "------  -------",
        "a          1.50",
        "longer    12.00",
    ]


def test_cells_print_as_given_and_none_is_empty() -> None:
    text = table(("a", "b", "c"), [("0.50", None, 7)])
    assert text.splitlines()[1:] == ["----  ---  ---", "0.50       7"]


def test_without_headers_only_rows_indented_and_trimmed() -> None:
    text = table((), [(1, "HTTP 500"), (12, "timeout")], align=("right", "left"), indent="  ")
    assert text == "   1  HTTP 500\n  12  timeout"


def test_markdown_is_a_pipe_table_marking_right_aligned_columns() -> None:
    text = table(("metric", "value"), [("ttft", "1.2")], align=("left", "right"), style="markdown")
    assert text.splitlines() == [
        "| metric   |   value |",
        "|:---------|--------:|",
        "| ttft     |     1.2 |",
    ]
