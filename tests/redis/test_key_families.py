"""The Redis store's keys are the prefix, then either a fixed name (no ":") or a family
name ending in its only ":" followed by a user's name (an instance id, workflow id, lock
resource, bucket key or ticket). No family is a prefix of another family or of a fixed name,
so no text in a name, ":" included, can make two keys meet (issue 14, item 4). This reads the
scripts themselves, so a new key that breaks the rule fails here."""

from __future__ import annotations

import re
from importlib import resources

KEY = re.compile(r'\bP \.\. "([^"]*)"')
ELSEWHERE = re.compile(r'\bP \.\.\s*[^"\s]')  # a key not started by a literal name


def _sources() -> dict[str, str]:
    folder = resources.files("cross_instance.stores.redis") / "lua"
    return {f.name: f.read_text(encoding="utf-8") for f in folder.iterdir()
            if f.name.endswith(".lua")}


def test_every_key_is_a_fixed_name_or_a_family_that_no_other_key_starts_with():
    names: set[str] = set()
    for file, text in _sources().items():
        assert not ELSEWHERE.search(text), f"{file} builds a key without a literal name"
        names.update(KEY.findall(text))
    assert len(names) > 20  # the pattern still finds the keys
    families = {n for n in names if n.endswith(":")}
    fixed = names - families
    for name in names:
        assert re.fullmatch(r"[a-z]+:?", name), f"key name {name!r}: letters, then ':' or not"
    for family in families:
        clashes = [n for n in names if n != family and n.startswith(family)]
        assert not clashes, f"keys {clashes} start with family {family!r}"
    assert "events" in fixed and "lock:" in families
