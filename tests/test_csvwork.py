"""process_csv and aggregate_csvs on the real Ray, called as plain functions."""

import pandas as pd
import pytest
import ray
from conftest import transactions_frame
from tasks.csvwork import CsvHead, _filter_range, aggregate_csvs, process_csv
from tasks.errors import InvalidInput


@pytest.fixture(scope="module")
def transactions(stack, ray_cluster):
    path = stack.datasets / "csvwork-transactions.csv"
    transactions_frame(5000).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("num_chunks", [1, 3, 7, 64])
def test_filter_keeps_rows_at_or_above_the_minimum(stack, transactions, num_chunks):
    output = stack.processed / f"filtered-{num_chunks}.csv"
    progress = []
    result = process_csv(transactions, output, {"filter": {"amount": 100},
                                                "num_chunks": num_chunks},
                         lambda done, total: progress.append((done, total)))
    source = pd.read_csv(transactions)
    expected = source[source["amount"] >= 100].reset_index(drop=True)
    written = pd.read_csv(output)
    pd.testing.assert_frame_equal(written, expected)
    assert (written["amount"] == 100).any()
    assert not (written["amount"] == 99.99).any()
    assert result["rows_read"] == len(source)
    assert result["rows_written"] == len(expected)
    assert result["chunks"] == num_chunks
    assert progress[-1] == (num_chunks, num_chunks)
    assert [path.name for path in output.parent.iterdir() if path.name.startswith(".")] == []


def test_a_range_read_in_small_blocks_keeps_the_same_rows(stack, transactions):
    head = CsvHead(transactions)
    middle = head.data_start + (head.size - head.data_start) // 2
    parts = {block_bytes: stack.processed / f"range-{block_bytes}.csv"
             for block_bytes in (100, 10**9)}
    counts = {block_bytes: ray.get(_filter_range.remote(
        str(transactions), columns=head.columns, start=middle, end=head.size,
        filters={"amount": 100}, part=str(part), block_bytes=block_bytes))
        for block_bytes, part in parts.items()}
    assert counts[100] == counts[10**9]
    assert parts[100].read_bytes() == parts[10**9].read_bytes()
    assert 0 < counts[100][1] < counts[100][0] < 5000


def test_several_filters_must_all_hold_and_empty_values_are_dropped(stack, ray_cluster):
    path = stack.datasets / "csvwork-gaps.csv"
    path.write_text("id,amount,quantity\n1,150,5\n2,,9\n3,120,1\n4,99,9\n5,100,3\n")
    output = stack.processed / "gaps.csv"
    process_csv(path, output, {"filter": {"amount": 100, "quantity": 3}, "num_chunks": 2})
    assert pd.read_csv(output)["id"].tolist() == [1, 5]


def test_without_filter_the_file_is_copied_row_for_row(stack, transactions):
    output = stack.processed / "copy.csv"
    result = process_csv(transactions, output, {"num_chunks": 5})
    assert output.read_bytes() == transactions.read_bytes()
    assert result["rows_written"] == result["rows_read"] == 5000


def test_kept_rows_are_the_input_bytes_quotes_and_line_ends_included(stack, ray_cluster):
    path = stack.datasets / "csvwork-quoted.csv"
    path.write_bytes(b'id,note,amount\r\n1,"a, b",100\r\n\r\n2,"x",5\r\n3,plain,250.50')
    output = stack.processed / "quoted.csv"
    result = process_csv(path, output, {"filter": {"amount": 100}, "num_chunks": 3})
    assert output.read_bytes() == b'id,note,amount\r\n1,"a, b",100\r\n3,plain,250.50\n'
    assert (result["rows_read"], result["rows_written"]) == (3, 2)


@pytest.mark.parametrize(("content", "transformations", "message"), [
    ("", {}, "is empty"),
    ("id,amount\n", {}, "has a header but no data rows"),
    ("id,amount\n1,5\n", {"filter": {"price": 1}}, "filter column 'price' is not in the CSV"),
    ("id,amount\n1,5\n2,abc\n", {"filter": {"amount": 1}},
     "column 'amount': CSV conversion error to double: invalid value 'abc'"),
    ("id,amount\n1,5\n", {"filter": {"amount": "100"}}, "must be a number"),
    ("id,amount\n1,5\n", {"num_chunks": 0}, "num_chunks must be an integer from 1 to 1024, got 0"),
    ("id,amount\n1,5\n", {"sort": "amount"}, "unknown transformations ['sort']"),
    ('id,note,amount\n1,"two\nlines",150\n', {"filter": {"amount": 1}, "num_chunks": 1},
     "a quoted field spans lines"),
])
def test_bad_input_is_refused_with_the_reason(stack, ray_cluster, content, transformations,
                                              message):
    path = stack.datasets / "csvwork-bad.csv"
    path.write_text(content)
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        process_csv(path, stack.processed / "bad.csv", transformations)
    assert not (stack.processed / "bad.csv").exists()


def test_aggregate_concatenates_in_the_first_sources_column_order(stack, ray_cluster):
    first, second = stack.datasets / "agg-1.csv", stack.datasets / "agg-2.csv"
    first.write_text("id,amount,customer\n1,10.5,a\n2,20,b\n")
    second.write_text("customer,id,amount\nc,3,30\n")
    output = stack.processed / "agg.csv"
    result = aggregate_csvs([first, second], output)
    assert pd.read_csv(output).to_dict("list") == {
        "id": [1, 2, 3], "amount": [10.5, 20.0, 30.0], "customer": ["a", "b", "c"]}
    assert result["rows"] == 3
    assert [source["rows"] for source in result["sources"]] == [2, 1]


@pytest.mark.parametrize(("second", "message"), [
    ("id,price\n3,30\n", r"lacks \['amount'\] and has extra \['price'\]"),
    ("id,amount\n3,thirty\n", "column 'amount' holds different types"),
])
def test_aggregate_refuses_a_schema_mismatch(stack, ray_cluster, second, message):
    first, other = stack.datasets / "mis-1.csv", stack.datasets / "mis-2.csv"
    first.write_text("id,amount\n1,10\n")
    other.write_text(second)
    with pytest.raises(InvalidInput, match=f"schema mismatch.*{message}"):
        aggregate_csvs([first, other], stack.processed / "mis.csv")
    assert not (stack.processed / "mis.csv").exists()
