"""The texts users send (to `mode=predict` and to the server), checked before they reach a
tokenizer: valid Unicode, something visible in them, and no longer than the model can read."""

import unicodedata

# A generous bound on the characters one token takes: English WordPiece/BPE tokens average ~4-5
# characters, so a text cut at 32 characters per token of `max_seq_length` still fills every
# token the model reads (only very long unbroken words, such as URLs or encoded blobs, take more).
CHARS_PER_TOKEN = 32

# Characters a tokenizer drops or reads as nothing: control (Cc: NUL, tab, newline, ...), format
# (Cf: zero-width space, byte-order mark, ...) and separators (Zs, Zl, Zp: spaces, line breaks).
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zs", "Zl", "Zp"}


def max_chars_for(max_seq_length: int) -> int:
    """The characters kept of a text read as `max_seq_length` tokens at most."""
    return CHARS_PER_TOKEN * max_seq_length


def check_text(text: str, max_chars: int | None) -> str:
    """`text` cut to its first `max_chars` characters (None: kept whole); ValueError with a
    one-line reason when it is not valid Unicode (a lone surrogate, which no encoding can write)
    or when nothing visible is left in what is kept (only whitespace, control or zero-width
    characters). Calling it again on its result returns that result."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"not valid Unicode: lone surrogate U+{ord(text[err.start]):04X} at character {err.start}"
        ) from None
    kept = text if max_chars is None else text[:max_chars]
    if not any(unicodedata.category(char) not in _INVISIBLE_CATEGORIES for char in kept):
        where = "" if len(kept) == len(text) else f" in its first {max_chars} characters"
        raise ValueError(f"must not be empty: no visible character{where} (only whitespace, control or format)")
    return kept
