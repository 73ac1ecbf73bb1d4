"""read_csv_labels, class_names, label_indices."""
from __future__ import annotations

import numpy as np
import pytest

from d2lkaggle.data.labels import class_names, label_indices, read_csv_labels


def write(tmp_path, data: bytes | str, name: str = "labels.csv") -> str:
    p = tmp_path / name
    p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(p)


def test_cifar_style(tmp_path):
    path = write(tmp_path, "id,label\n1,frog\n2,truck\n10,frog\n")
    labels = read_csv_labels(path)
    assert labels == {"1": "frog", "2": "truck", "10": "frog"}
    assert list(labels) == ["1", "2", "10"]  # file order, ids stay strings


def test_bom_crlf_quotes_spaces_blank_lines(tmp_path):
    data = ("\ufeffid , breed \r\n"
            " 000bec18 , \"boston_bull\" \r\n"
            "\r\n"
            "\"001513df\",  \"a, b\"\r\n"
            "   \r\n"
            "00214f31,dingo")  # no final newline
    labels = read_csv_labels(write(tmp_path, data))
    assert labels == {"000bec18": "boston_bull", "001513df": "a, b", "00214f31": "dingo"}


def test_duplicate_id_names_both_lines(tmp_path):
    path = write(tmp_path, "id,label\n1,cat\n\n2,dog\n1,bird\n")
    with pytest.raises(ValueError) as e:
        read_csv_labels(path)
    msg = str(e.value)
    assert path in msg and "line 5" in msg and "line 2" in msg and "'1'" in msg


def test_missing_header(tmp_path):
    path = write(tmp_path, "1,frog\n2,truck\n")
    with pytest.raises(ValueError, match=r"line 1: missing header") as e:
        read_csv_labels(path)
    assert path in str(e.value)


@pytest.mark.parametrize("header", ["id\n", "id,label,extra\n", "id,\n", ",label\n"])
def test_bad_header(tmp_path, header):
    path = write(tmp_path, header + "1,frog\n")
    with pytest.raises(ValueError, match=r"line 1: expected a header"):
        read_csv_labels(path)


@pytest.mark.parametrize("row", ["3,frog,extra", "3"])
def test_wrong_column_count(tmp_path, row):
    path = write(tmp_path, f"id,label\n1,cat\n2,dog\n{row}\n")
    with pytest.raises(ValueError, match=r"line 4: expected 2 columns") as e:
        read_csv_labels(path)
    assert path in str(e.value)


def test_empty_label_and_empty_id(tmp_path):
    with pytest.raises(ValueError, match=r"line 3: empty label for id '2'"):
        read_csv_labels(write(tmp_path, "id,label\n1,cat\n2,  \n"))
    with pytest.raises(ValueError, match=r"line 2: empty id"):
        read_csv_labels(write(tmp_path, "id,label\n ,cat\n", "b.csv"))


def test_empty_file_and_not_utf8(tmp_path):
    with pytest.raises(ValueError, match="empty label file"):
        read_csv_labels(write(tmp_path, ""))
    with pytest.raises(ValueError, match="not a UTF-8"):
        read_csv_labels(write(tmp_path, b"id,label\n1,caf\xe9\n", "latin1.csv"))


def test_unterminated_quote_is_value_error(tmp_path):
    path = write(tmp_path, 'id,label\n1,"cat\n')
    with pytest.raises(ValueError, match="malformed CSV"):
        read_csv_labels(path)


def test_class_names_and_indices():
    labels = {"1": "truck", "2": "airplane", "3": "cat", "4": "airplane", "5": "Zebra"}
    classes = class_names(labels)
    assert classes == ["Zebra", "airplane", "cat", "truck"]  # plain string sort, like ImageFolder
    idx = label_indices(labels, ["4", "1", "3"], classes)
    assert idx.dtype == np.int64 and idx.tolist() == [1, 3, 2]
    assert label_indices(labels, ["5"]).tolist() == [0]
    with pytest.raises(ValueError, match="no label: '9'"):
        label_indices(labels, ["1", "9"], classes)
    with pytest.raises(ValueError, match="not among"):
        label_indices(labels, ["1"], ["cat"])
