"""What the gateway keeps of an answer as it passes, to read its usage when it ends: the
whole body up to ``KEEP`` bytes, else its first and last ``KEEP / 2`` (an Anthropic stream
states the prompt's tokens in its first event and the output's in its last ones; OpenAI
states both in its last chunk). Bounded, whatever the answer's length."""

from __future__ import annotations

KEEP = 256 << 10


class Tap:
    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.cut = False

    def see(self, chunk: bytes) -> None:
        if not self.cut:
            self.head += chunk
            if len(self.head) > KEEP:
                half = KEEP // 2
                self.tail = self.head[-half:]
                del self.head[half:]
                self.cut = True
            return
        self.tail += chunk
        if len(self.tail) > KEEP:
            del self.tail[:-KEEP // 2]

    def body(self) -> bytes:
        """What was kept; when cut, head and tail with a line break between them (the
        events cut in two are skipped by the usage readers, as any unreadable line)."""
        if not self.cut:
            return bytes(self.head)
        return bytes(self.head) + b"\n\n" + bytes(self.tail)
