"""The tolerant v2 tokenizer: endings, BOM, charsets, escapes, nulls, repetitions."""

from __future__ import annotations

import pytest

from fhirpm.errors import Category
from fhirpm.hl7v2 import parser
from fhirpm.hl7v2.parser import NULL, V2Error
from tests.hl7v2.samples import adt


@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"])
def test_segment_endings_are_equivalent(ending: str) -> None:
    msg = parser.parse(adt().replace("\r", ending))
    assert [s.name for s in msg.segments] == ["MSH", "EVN", "PID", "PV1"]
    assert msg.first("PID").value(5, 2) == "Jane"


def test_bom_is_stripped_and_header_read() -> None:
    msg = parser.parse(b"\xef\xbb\xbf" + adt(control="X9").encode())
    h = msg.header
    assert (h.sending_application, h.message_code, h.event, h.control_id, h.version) == (
        "EHR", "ADT", "A08", "X9", "2.5.1")


def test_msh_fields_are_numbered_like_the_standard() -> None:
    msh = parser.parse(adt()).msh
    assert msh.raw(1) == "|" and msh.raw(2) == "^~\\&" and msh.value(9, 2) == "A08"


def test_escapes_are_undone_after_splitting() -> None:
    pid = "PID|1||MRN1^^^P^MR||O\\T\\Brien^A\\S\\B\\F\\C\\R\\D\\E\\||||||Line1\\.br\\Line2\\X41\\"
    seg = parser.parse(adt(pid=pid)).first("PID")
    assert seg.value(5, 1) == "O&Brien"
    assert seg.value(5, 2) == "A^B|C~D\\"
    assert seg.field(5) == [[["O&Brien"], ["A^B|C~D\\"]]]
    assert seg.value(11) == "Line1\nLine2A"


def test_unknown_escape_is_kept_literally() -> None:
    pid = "PID|1||MRN1||Doe\\Q12\\x^J"
    assert parser.parse(adt(pid=pid)).first("PID").value(5) == "Doe\\Q12\\x"


def test_null_differs_from_empty_and_repetitions_split() -> None:
    pid = 'PID|1||A^^^P^MR~B^^^Q^MR||""||||||||'
    seg = parser.parse(adt(pid=pid)).first("PID")
    assert seg.value(5) == NULL
    assert seg.field(7) == []
    assert [rep[0][0] for rep in seg.field(3)] == ["A", "B"]
    assert seg.value(3, 4, rep=1) == "Q"


def test_latin1_declared_in_msh18() -> None:
    text = adt(msh18="8859/1", pid="PID|1||M1||Müller^José")
    msg = parser.parse(text.encode("latin-1"))
    assert msg.first("PID").value(5) == "Müller"


def test_unlabelled_latin1_falls_back_and_override_wins() -> None:
    raw = adt(pid="PID|1||M1||Müller^José").encode("latin-1")
    assert parser.parse(raw).first("PID").value(5, 2) == "José"
    # a sender configured as cp1252 reads bytes as that
    euro = adt(pid="PID|1||M1||Euro\x80").encode("latin-1")
    assert parser.parse(euro, charset_override="cp1252").first("PID").value(5) == "Euro€"


def test_declared_utf8_with_bad_bytes_is_rejected() -> None:
    raw = adt(msh18="UNICODE UTF-8", pid="PID|1||M1||Müller").encode("latin-1")
    with pytest.raises(V2Error) as err:
        parser.parse(raw)
    assert err.value.category is Category.STRUCTURE and err.value.position == 18


def test_z_segments_and_unknown_fields_are_kept() -> None:
    msg = parser.parse(adt(extra="ZPI|1|custom^value|x"))
    z = msg.first("ZPI")
    assert z is not None and z.value(2, 2) == "value"
    assert "ZPI|1|custom^value|x" in msg.text


@pytest.mark.parametrize("text", ["", "PID|1", "MSH", "MSH|^~\\&|A\rnot a segment\r",
                                  "MSH|^^^^|A|B\r"])
def test_garbage_is_a_v2_error(text: str) -> None:
    with pytest.raises(V2Error) as err:
        parser.parse(text)
    assert err.value.reject


def test_split_messages_in_one_file() -> None:
    both = adt(control="1") + "\n" + adt(control="2")
    parts = parser.split_messages("FHS|^~\\&\r" + both)
    assert [parser.parse(p).header.control_id for p in parts] == ["1", "2"]


def test_escape_round_trips() -> None:
    text = "a|b^c&d~e\\f\nline"
    escaped = parser.escape(text)
    assert "|" not in escaped and "^" not in escaped
    assert parser.unescape(escaped, parser.Delimiters()) == text
