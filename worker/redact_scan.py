"""The redactor's look at an entry before it is handed over, compiled (shark/compiled.py).

worker.redact is interpreted: a call into it cost ~10k instructions per WebSocket entry (most of
that protocol's entry), though for most entries it changes nothing. The dissection asks here
first whether Redactor.entry could change an entry at all (entry_left_alone), and calls it only
when it could; the redactor's own text prefilter is the same function (may_hold_field), so the
two cannot disagree on what a text may hold.
"""

from __future__ import annotations

from typing import Any


def may_hold_field(text: str, quoted_names: tuple[str, ...] | None) -> bool:
    """False only when the redactor's JSON-field regex cannot match in `text`: none of the field
    names in quotes (`quoted_names`: lower case; None when a name is not ASCII) is in it. For
    ASCII text and names lower() and substring tests find exactly the names re.I finds (its other
    foldings, 'ſ' for 's', 'K' for 'k', 'ı' and 'İ' for 'i', are not ASCII)."""
    if quoted_names is None or not text.isascii():
        return True
    lower = text.lower()
    for name in quoted_names:     # (a loop: any() over a generator costs as much as the regex)
        if name in lower:
            return True
    return False


def message_left_alone(message: dict[str, Any] | None, other_keys: frozenset[str],
                       quoted_names: tuple[str, ...] | None) -> bool:
    """Whether Redactor._message leaves one side as it is: no key it reads other than "text"
    (`other_keys`: MESSAGE_KEYS without it), and no text it would search (a non-empty string
    with a quote and a field name in quotes)."""
    if not message:
        return True
    if not other_keys.isdisjoint(message):
        return False
    text = message.get("text")
    if not text or not isinstance(text, str) or '"' not in text:
        return True
    return not may_hold_field(text, quoted_names)
