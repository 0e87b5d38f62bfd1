"""HL7 v2 (ER7) wire text -> a tolerant, lazily split message.

Owns: byte decoding (BOM, MSH-18 character sets, a per-sender override), segment splitting
(CR, LF or CRLF), and field/repetition/component/subcomponent access with escapes undone
*after* splitting. It keeps every segment, Z-segments and fields no map knows included, so
nothing is dropped. It knows nothing of FHIR or mappings.

A field value of exactly `""` is the v2 null ("delete this value"); it is returned as the
`NULL` string so mappers can tell it from an empty field ("no information: keep").

Why our own tokenizer rather than python-hl7: measured in bench/hl7_bench.py the split
costs the same order of time, but we need lazy per-field splitting, our own unescape rules
(`\\Xhh\\` through the message charset, `\\.br\\`), MSH-18 decoding and NULL handling, all of
which python-hl7 leaves to the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from fhirpm.errors import Category, FhirError

NULL = '""'
_BOMS = (b"\xef\xbb\xbf",)
_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")

# HL7 table 0211 (MSH-18) -> Python codec. Empty means ASCII, which we read tolerantly.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii", "8859/1": "latin-1", "8859/2": "iso8859-2", "8859/3": "iso8859-3",
    "8859/4": "iso8859-4", "8859/5": "iso8859-5", "8859/6": "iso8859-6",
    "8859/7": "iso8859-7", "8859/8": "iso8859-8", "8859/9": "iso8859-9",
    "8859/15": "iso8859-15", "UNICODE UTF-8": "utf-8", "UNICODE": "utf-8", "UTF-8": "utf-8",
    "WINDOWS-1252": "cp1252", "CP1252": "cp1252",
}


class V2Error(FhirError):
    """A message problem with its HL7 error code (table 0357) and location (for ERR)."""

    def __init__(self, category: Category, diagnostics: str, *, hl7_code: str = "207",
                 segment: str = "", sequence: int = 0, position: int = 0) -> None:
        super().__init__(category, diagnostics)
        self.hl7_code = hl7_code
        self.segment = segment
        self.sequence = sequence  # 1-based occurrence of the segment in the message
        self.position = position  # field number

    @property
    def reject(self) -> bool:
        """AR (the message can never be accepted as sent) rather than AE."""
        return self.hl7_code in ("100", "102", "200", "201", "202", "203")


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent


def decode(data: bytes, charset_override: str | None = None) -> str:
    """Bytes -> text: strip a BOM, then decode per the override, MSH-18, or UTF-8 with a
    Latin-1 fallback (unlabelled Latin-1 is common in the wild)."""
    for bom in _BOMS:
        if data.startswith(bom):
            data = data[len(bom):]
    codec = _codec(charset_override) if charset_override else _declared_codec(data)
    if codec is None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise V2Error(Category.STRUCTURE, f"Message is not valid {codec} (MSH-18): {exc.reason} "
                      f"at byte {exc.start}", hl7_code="102", segment="MSH",
                      sequence=1, position=18) from None


def _codec(name: str) -> str | None:
    name = name.strip().upper()
    if not name or name == "ASCII":
        return None
    return CHARSETS.get(name) or _python_codec(name)


def _python_codec(name: str) -> str:
    import codecs

    try:
        return codecs.lookup(name).name
    except LookupError:
        raise V2Error(Category.NOT_SUPPORTED, f"Unsupported character set {name!r} in MSH-18",
                      hl7_code="102", segment="MSH", sequence=1, position=18) from None


def _declared_codec(data: bytes) -> str | None:
    """MSH-18 sits inside the bytes it describes: read the MSH line as Latin-1 first."""
    end = len(data)
    for sep in (b"\r", b"\n"):
        at = data.find(sep)
        if at != -1:
            end = min(end, at)
    line = data[:end].decode("latin-1")
    if not line.startswith("MSH") or len(line) < 4:
        return None
    parts = line.split(line[3])
    declared = parts[17] if len(parts) > 17 else ""
    rep = parts[1][1:2] if len(parts) > 1 and len(parts[1]) > 1 else "~"
    return _codec(declared.split(rep)[0])


def split_messages(text: str) -> list[str]:
    """A file may hold several messages (and batch FHS/BHS/BTS/FTS lines): one str each."""
    lines = _lines(text)
    out: list[list[str]] = []
    for line in lines:
        if line[:3] in ("FHS", "BHS", "BTS", "FTS"):
            continue
        if line.startswith("MSH") or not out:
            out.append([])
        out[-1].append(line)
    return ["\r".join(m) + "\r" for m in out if m]


def _lines(text: str) -> list[str]:
    text = text.lstrip("\ufeff").replace("\r\n", "\r").replace("\n", "\r")
    return [line for line in text.split("\r") if line.strip()]


def parse(text: str | bytes, charset_override: str | None = None) -> Message:
    """Parse one message. Structural problems raise V2Error (AR)."""
    if isinstance(text, bytes | bytearray):
        text = decode(bytes(text), charset_override)
    lines = _lines(text.lstrip())
    if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
        raise V2Error(Category.STRUCTURE, "Message does not start with an MSH segment",
                      hl7_code="100", segment="MSH", sequence=1)
    first = lines[0]
    enc = first[4:8]
    delims = Delimiters(first[3], enc[0], enc[1], enc[2], enc[3] if len(enc) > 3 else "&")
    if len(set(delims.encoding_characters + delims.field)) != 5:
        raise V2Error(Category.STRUCTURE, f"MSH-1/MSH-2 delimiters {first[3:8]!r} are not five "
                      "distinct characters", hl7_code="102", segment="MSH", sequence=1,
                      position=2)
    segments: list[Segment] = []
    counts: dict[str, int] = {}
    for line in lines:
        name = line[:3]
        if not _SEGMENT_NAME.match(name) or (len(line) > 3 and line[3] != delims.field):
            raise V2Error(Category.STRUCTURE, f"Line {len(segments) + 1} is not a segment: "
                          f"{line[:20]!r}", hl7_code="100", segment=name,
                          sequence=len(segments) + 1)
        counts[name] = counts.get(name, 0) + 1
        segments.append(Segment(name, line.split(delims.field), delims, counts[name]))
    return Message(segments, delims, "\r".join(lines) + "\r")


@dataclass(slots=True)
class Segment:
    """One segment; `parts[0]` is its name. Fields are split further only when asked for."""

    name: str
    parts: list[str]
    delims: Delimiters
    occurrence: int = 1  # n-th segment of this name in the message
    _cache: dict[int, list[list[list[str]]]] = field(default_factory=dict)

    def raw(self, n: int) -> str:
        """Field n as it is on the wire (escaped). MSH-1 is the field separator."""
        if self.name == "MSH":
            if n == 1:
                return self.delims.field
            n -= 1
        return self.parts[n] if 0 < n < len(self.parts) else ""

    def field(self, n: int) -> list[list[list[str]]]:
        """Field n as repetitions -> components -> subcomponents, unescaped. [] if empty."""
        found = self._cache.get(n)
        if found is None:
            found = self._cache[n] = self._split(n)
        return found

    def _split(self, n: int) -> list[list[list[str]]]:
        text = self.raw(n)
        if not text:
            return []
        d = self.delims
        if self.name == "MSH" and n in (1, 2):
            return [[[text]]]
        if text == NULL:
            return [[[NULL]]]
        sub_, comp_ = d.subcomponent, d.component
        if d.escape not in text:  # the common case: nothing to unescape in any leaf
            return [[comp.split(sub_) for comp in rep.split(comp_)]
                    for rep in text.split(d.repetition)]
        return [[[unescape(sub, d) for sub in comp.split(sub_)] for comp in rep.split(comp_)]
                for rep in text.split(d.repetition)]

    def value(self, n: int, comp: int = 1, sub: int = 1, rep: int = 0) -> str:
        """One leaf value ('' when absent; NULL when the field is `""`)."""
        reps = self.field(n)
        if rep >= len(reps):
            return ""
        comps = reps[rep]
        if comp > len(comps):
            return ""
        subs = comps[comp - 1]
        return subs[sub - 1] if sub <= len(subs) else ""

    @property
    def size(self) -> int:
        """The number of the last field present."""
        return len(self.parts) if self.name == "MSH" else len(self.parts) - 1


@dataclass
class Message:
    segments: list[Segment]
    delims: Delimiters
    text: str  # the normalised message (CR-terminated segments)

    def first(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    @cached_property
    def header(self) -> Header:
        m = self.msh
        return Header(
            sending_application=m.value(3), sending_facility=m.value(4),
            receiving_application=m.value(5), receiving_facility=m.value(6),
            timestamp=m.value(7), message_code=m.value(9, 1), event=m.value(9, 2),
            structure=m.value(9, 3), control_id=m.value(10), processing_id=m.value(11),
            version=m.value(12), accept_ack=m.value(15), app_ack=m.value(16),
            charset=m.value(18),
        )


@dataclass(frozen=True, slots=True)
class Header:
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    timestamp: str
    message_code: str
    event: str
    structure: str
    control_id: str
    processing_id: str
    version: str
    accept_ack: str
    app_ack: str
    charset: str

    @property
    def enhanced(self) -> bool:
        """Enhanced acknowledgement mode: MSH-15 or MSH-16 valued."""
        return bool(self.accept_ack or self.app_ack)


_HEX = re.compile(r"^[0-9A-Fa-f]+$")


def unescape(text: str, d: Delimiters, codec: str = "utf-8") -> str:
    """Undo v2 escapes in one leaf value (after splitting, so delimiters come back safely).

    Formatting escapes become text (`\\.br\\` a newline); highlighting and character-set
    switches are dropped; an unknown or unterminated escape is kept literally.
    """
    e = d.escape
    if e not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        end = text.find(e, i + 1) if ch == e else -1
        if end == -1:
            out.append(ch)
            i += 1
            continue
        out.append(_escape_value(text[i + 1:end], d, codec))
        i = end + 1
    return "".join(out)


def _escape_value(code: str, d: Delimiters, codec: str) -> str:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition,
              "E": d.escape, "H": "", "N": "", ".br": "\n", ".sp": "\n", ".fi": "",
              ".nf": "", ".ce": "", ".sk": " "}
    if code in simple:
        return simple[code]
    if code[:1] == "X" and len(code) > 1 and len(code) % 2 == 1 and _HEX.match(code[1:]):
        raw = bytes.fromhex(code[1:])
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            return raw.decode("latin-1")
    if code[:1] in ("C", "M") or code[:3] in (".in", ".ti", ".sp"):
        return ""
    return d.escape + code + d.escape


def escape(text: str, d: Delimiters = Delimiters()) -> str:
    """Text -> a leaf value safe inside any component (the escape char first)."""
    e = d.escape
    out = text.replace(e, f"{e}E{e}")
    for ch, code in ((d.field, "F"), (d.component, "S"), (d.subcomponent, "T"),
                     (d.repetition, "R")):
        out = out.replace(ch, f"{e}{code}{e}")
    return out.replace("\r\n", f"{e}.br{e}").replace("\n", f"{e}.br{e}").replace("\r", f"{e}.br{e}")
