"""A lean reader of the header lines of an HTTP/1.x request (the handler's fast path).

``http.server`` parses headers with the ``email`` package, which costs about a third of the
CPU time of a small keep-alive request. :func:`read_header_lines` reads the same lines with the
same limits and the same 431 answers (a line over 65,536 bytes, more than 100 lines) into plain
``(name, value)`` pairs: values without surrounding whitespace, an obsolete folded line joined
to the previous value with a space, lines that are not ``name: value`` skipped.
"""

from __future__ import annotations

from io import BufferedIOBase

MAX_LINE = 65536
MAX_HEADERS = 100


class HeadError(Exception):
    """The header block breaks a limit: answer 431 with ``message`` and ``explain``."""

    def __init__(self, message: str, explain: str) -> None:
        """Keep the short ``message`` and the longer ``explain`` of the 431 answer."""
        super().__init__(explain)
        self.message = message
        self.explain = explain


def read_header_lines(rfile: BufferedIOBase) -> list[tuple[str, str]]:
    """Header ``(name, value)`` pairs up to the blank line (or EOF), in order, or ``HeadError``."""
    pairs: list[tuple[str, str]] = []
    lines = 0
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise HeadError("Line too long", "header line")
        if line in (b"\r\n", b"\n", b""):
            return pairs
        lines += 1
        if lines > MAX_HEADERS:
            raise HeadError("Too many headers", f"got more than {MAX_HEADERS} headers")
        text = line.decode("iso-8859-1")
        if text[0] in " \t":
            if pairs:
                name, value = pairs[-1]
                pairs[-1] = (name, f"{value} {text.strip()}".strip())
            continue
        name, sep, value = text.partition(":")
        if sep and name and name == name.strip():
            pairs.append((name, value.strip()))


def first_values(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """``{lower-case name: value}`` keeping the first of repeated headers (as ``Message.get``)."""
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name.lower(), value)
    return fields
