"""Text normalisation for moderation, and the blocklist matcher built on it.

Two outputs from one chat message:
- `fold(text)`: a matching form that undoes the usual disguises (NFKC, casefold, accents and other
  combining marks, zero-width/format/control characters, Cyrillic/Greek/small-caps look-alikes).
  `Blocklist.find` then tries leetspeak readings, punctuation removed or turned into spaces, spaced
  single letters ("n u d e") joined, and repeated letters ("nuuude") — so each entry is listed once.
- `clean_for_model(text)`: the plain text that may reach the model and the on-stream overlays:
  letters, digits, spaces and a little punctuation; no markup, braces, control or bidi characters.
- `display_text(text, limit)`: what a page or a chat reply may show of a text already decided on
  (a name, a moderated prompt): no control, format (bidi, zero-width) or unassigned characters, clipped.
Bidi controls are a display trick the folded text cannot see: "\u202eedun" folds to "edun" but a
browser paints it "nude". `Blocklist.find` therefore also reads such text backwards, moderation refuses
text with embeddings, overrides or isolates, and nothing is ever shown with them (display_text).
Nothing here raises on any `str` (lone surrogates included): hostile input is the normal case.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Letters that render as nothing (fillers) but are not format characters, so NFKC keeps them.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e\u17b4\u17b5\ufffd")

# Look-alikes that NFKC leaves alone (after casefold, so lowercase only).
_HOMOGLYPHS = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "г": "r", "е": "e", "ё": "e", "з": "3", "и": "u", "і": "i", "ї": "i", "ј": "j",
    "к": "k", "л": "n", "м": "m", "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y",
    "х": "x", "ѕ": "s", "ь": "b", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ү": "y", "һ": "h", "ӏ": "l", "ɡ": "g",
    # Greek
    "α": "a", "β": "b", "γ": "y", "δ": "d", "ε": "e", "ζ": "z", "η": "n", "ι": "i", "κ": "k", "μ": "u",
    "ν": "v", "ο": "o", "ρ": "p", "σ": "o", "ς": "s", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    # Armenian
    "օ": "o", "ս": "u", "ց": "g", "հ": "h", "ո": "n",
    # IPA, small capitals and other Latin look-alikes
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɐ": "a", "ɒ": "o", "ɔ": "c", "ɛ": "e", "ɩ": "i", "ɪ": "i", "ʟ": "l",
    "ɴ": "n", "ʀ": "r", "ʏ": "y", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g",
    "ʜ": "h", "ᴊ": "j", "ᴋ": "k", "ᴍ": "m", "ᴏ": "o", "ᴘ": "p", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v",
    "ᴡ": "w", "ᴢ": "z", "ø": "o", "ð": "d", "þ": "p", "ł": "l", "đ": "d", "ħ": "h", "ŧ": "t",
    "æ": "ae", "œ": "oe",
})

# Two leetspeak readings: "1" and "|" are read as "i" in one and "l" in the other.
_LEET_COMMON = {"0": "o", "2": "z", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g",
                "@": "a", "$": "s", "!": "i", "+": "t", "€": "e", "£": "l", "¡": "i", "(": "c"}
_LEET_I = str.maketrans({**_LEET_COMMON, "1": "i", "|": "i"})
_LEET_L = str.maketrans({**_LEET_COMMON, "1": "l", "|": "l"})

_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_NOT_ALNUM_OR_SPACE = re.compile(r"[^a-z0-9\s]+")
_REPEATS = re.compile(r"(.)\1+")
_SPACES = re.compile(r"\s+")
_ASCII_CONTROLS = {c: None for c in range(32) if not chr(c).isspace()} | {127: None}
_MODEL_PUNCT = frozenset(".,!?'\"-:;()&/+#%")
_ASCII_SPACE = re.compile(r"[\s\x1c-\x1f]")
_ASCII_DROP = re.compile(r"[^A-Za-z0-9 .,!?'\"\-:;()&/+#%]")
_MAX_MARKS = 2  # combining marks kept after one letter: real scripts need 1-2; "Zalgo" stacks dozens
_MAX_RUN = 32  # spaced single letters considered together ("n u d e")

# Embeddings, overrides and isolates: they reorder what a browser paints, and a prompt has no use for
# them. The marks (LRM, RLM, ALM) only nudge neutral characters and cannot reverse Latin letters.
DIRECTION_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def fix_surrogates(text: str) -> str:
    """Pair up surrogate halves and replace lone ones with U+FFFD, so the text is encodable."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def fold(text: str) -> str:
    """The matching form: lowercase Latin-looking text with disguises removed (see the module doc)."""
    text = fix_surrogates(text)
    if text.isascii():
        return text.translate(_ASCII_CONTROLS).lower()
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    out = []
    for ch in text:
        if ch.isspace():
            out.append(" ")
            continue
        cat = unicodedata.category(ch)
        # Marks, format (zero-width, bidi overrides, tags), controls, private and unassigned code points
        # are dropped rather than spaced, so they cannot split a word apart.
        if cat[0] in "MC" or ch in _INVISIBLE:
            continue
        out.append(" " if cat[0] == "Z" else ch)
    return "".join(out).translate(_HOMOGLYPHS)


def has_direction_controls(text: str) -> bool:
    """True when `text` holds a bidi embedding, override or isolate (see DIRECTION_CONTROLS)."""
    return not DIRECTION_CONTROLS.isdisjoint(text)


def display_text(text: str, limit: int) -> str:
    """`text` as a page or chat may show it: control, format (bidi, zero-width, tags), private-use,
    unassigned and filler characters dropped, at most two combining marks per letter (no "Zalgo" tower
    over the box), single spaces, and at most `limit` characters with "…" marking a cut. Markup stays:
    pages set text with textContent and chat shows it literally; the content itself was decided on
    before (moderation, or the streamer's own config)."""
    out: list[str] = []
    marks = _MAX_MARKS
    for ch in fix_surrogates(text):
        cat = unicodedata.category(ch)
        if ch.isspace() or cat[0] == "Z":
            out.append(" ")
            marks = _MAX_MARKS
        elif cat[0] == "C" or ch in _INVISIBLE:
            continue
        elif cat[0] == "M":
            if marks < _MAX_MARKS:
                out.append(ch)
                marks += 1
        else:
            out.append(ch)
            marks = 0
    shown = _SPACES.sub(" ", "".join(out)).strip()
    return shown if len(shown) <= limit else shown[: max(0, limit - 1)].rstrip() + "…"


def _clean_once(text: str) -> str:
    out: list[str] = []
    marks = 0
    for ch in unicodedata.normalize("NFKC", text):
        cat = unicodedata.category(ch)
        if ch.isspace() or cat[0] == "Z":
            out.append(" ")
            marks = _MAX_MARKS
        elif ch in _INVISIBLE:
            continue
        elif cat[0] in "LN":
            out.append(ch)
            marks = 0
        elif cat[0] == "M":
            if marks < _MAX_MARKS:
                out.append(ch)
                marks += 1
        elif ch in _MODEL_PUNCT:
            out.append(ch)
            marks = _MAX_MARKS
    return _SPACES.sub(" ", "".join(out)).strip()


def clean_for_model(text: str) -> str:
    """Plain text safe to template and show: letters, digits, single spaces, `.,!?'"-:;()&/+#%`."""
    if text.isascii():  # the common case, without the per-character Unicode walk
        return _SPACES.sub(" ", _ASCII_DROP.sub("", _ASCII_SPACE.sub(" ", text))).strip()
    text = fix_surrogates(text).replace("\ufffd", "")
    for _ in range(3):  # dropping a character can let NFKC compose its neighbours: repeat to a fixed point
        cleaned = _clean_once(text)
        if cleaned == text:
            break
        text = cleaned
    return text


@functools.lru_cache(maxsize=1 << 16)  # chat repeats its words: most tokens are seen before
def _collapse(s: str) -> str:
    return _REPEATS.sub(r"\1", s)


@dataclass(frozen=True)
class BlockedTerm:
    """One blocklist entry as matched: `entry` as written, its category, and how it matches."""

    entry: str
    category: str
    anywhere: bool
    key: str  # the entry's letters with repeats collapsed: the lookup key
    pattern: re.Pattern[str]  # checks the uncollapsed candidate ("boobs" must not match "bobs")
    words: int = 1


def _terms(entry: str, category: str) -> list[BlockedTerm]:
    """An entry's matchable forms. Entries with digits ("rule34") also get their leetspeak readings, since
    a disguised "ru1e34" is read with every digit as a letter."""
    body = fold(entry.strip().lstrip("*"))
    bodies = {body} | ({body.translate(_LEET_I), body.translate(_LEET_L)} if any(c.isdigit() for c in body) else set())
    return [_term(entry, category, b) for b in sorted(bodies)]


def _term(entry: str, category: str, body: str) -> BlockedTerm:
    anywhere = entry.startswith("*")
    words = _NOT_ALNUM.sub(" ", body).split()
    joined = "".join(words)
    if len(joined) < 2 or not joined.isascii():
        raise ValueError(f"blocklist entry {entry!r} needs at least two Latin letters or digits")
    # Each letter may repeat ("nuuude"), but a doubled letter must stay doubled ("boobs" is not "bobs").
    body_re = "".join(re.escape(ch) + ("+" if n == 1 else f"{{{n},}}") for ch, n in _runs(joined))
    pattern = re.compile(body_re if anywhere else body_re + "(?:e*s+)?")
    return BlockedTerm(entry, category, anywhere, _collapse(joined), pattern, len(words))


def _runs(s: str) -> Iterable[tuple[str, int]]:
    i = 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] == s[i]:
            j += 1
        yield s[i], j - i
        i = j


class Blocklist:
    """Words and phrases by category, matched on every normalised reading of a text."""

    def __init__(self, entries: Mapping[str, Iterable[str]]) -> None:
        self._words: dict[str, list[BlockedTerm]] = {}
        self._phrases: dict[str, list[BlockedTerm]] = {}
        self._anywhere: list[BlockedTerm] = []
        self._phrase_heads: set[str] = set()  # prefixes of phrase keys: only there can a phrase start
        self._max_words = 1
        self.size = 0
        for category, items in entries.items():
            for entry in items:
                self.size += 1
                for term in _terms(entry, category):
                    self._add(term)
        keys = sorted({t.key for t in self._anywhere}, key=len, reverse=True)
        self._anywhere_re = re.compile("|".join(map(re.escape, keys))) if keys else None

    def _add(self, term: BlockedTerm) -> None:
        if term.anywhere:
            self._anywhere.append(term)
        else:
            self._words.setdefault(term.key, []).append(term)
        if term.words > 1:
            self._phrases.setdefault(term.key, []).append(term)
            # A phrase can only start at a token that is a prefix of it ("takeoff clothes").
            self._phrase_heads.update(term.key[:i] for i in range(1, len(term.key) + 1))
            self._max_words = max(self._max_words, term.words)

    @classmethod
    def build(cls, extra: Iterable[str] = (), allow: Iterable[str] = ()) -> Blocklist:
        """The shipped list plus the streamer's extra entries, minus the entries they allow."""
        from streamer.control.policy.blocklist import BLOCKLIST

        allowed = {a.strip().casefold() for a in allow}
        entries = {cat: [e for e in items if e.casefold() not in allowed] for cat, items in BLOCKLIST.items()}
        entries["blocked by the streamer"] = [e for e in extra if e.strip()]
        return cls(entries)

    def find(self, text: str) -> BlockedTerm | None:
        """The first blocked term found in any reading of `text`, or None."""
        folded = fold(text)
        # A right-to-left override paints its letters backwards; whatever it paints is a stretch of the
        # reversed text, so reading that too catches "\u202eedun" (over-approximate, on purpose).
        forms = (folded, folded[::-1]) if has_direction_controls(text) else (folded,)
        readings = set()
        for form in forms:
            for table in (None, _LEET_I, _LEET_L):
                s = form if table is None else form.translate(table)
                readings.add(_NOT_ALNUM.sub(" ", s))  # punctuation separates words: "nude,cat"
                readings.add(_NOT_ALNUM_OR_SPACE.sub("", s))  # punctuation inside a word is a trick: "n.u.d.e"
        seen: dict[str, BlockedTerm | None] = {}  # readings share most tokens: look each up once
        for reading in readings:
            hit = self._scan(reading.split(), seen)
            if hit is not None:
                return hit
        return None

    def _scan(self, tokens: list[str], seen: dict[str, BlockedTerm | None]) -> BlockedTerm | None:
        keys = [_collapse(tok) for tok in tokens]
        for tok, key in zip(tokens, keys, strict=True):
            hit = seen.get(tok, False)
            if hit is False:
                hit = seen[tok] = self._word(tok, key, self._words) or self._inside(tok, key)
            if hit is not None:
                return hit  # type: ignore[return-value]
        # Spaced single letters ("n u d e", "n uuu d e"): a token of one repeated letter counts as one.
        run: list[str] = []
        for tok, key in [*zip(tokens, keys, strict=True), ("", "")]:
            single = len(key) == 1
            if single and len(run) < _MAX_RUN:
                run.append(tok)
                continue
            if len(run) >= 2:
                hit = self._letters("".join(run))
                if hit is not None:
                    return hit
            run = [tok] if single else []
        for i, key in enumerate(keys):
            if key not in self._phrase_heads:
                continue
            for n in range(2, self._max_words + 1):
                if i + n <= len(tokens):
                    joined = "".join(tokens[i : i + n])
                    hit = self._word(joined, _collapse(joined), self._phrases)
                    if hit is not None:
                        return hit
        return None

    @staticmethod
    def _word(tok: str, key: str, table: dict[str, list[BlockedTerm]]) -> BlockedTerm | None:
        terms = table.get(key)
        if key[-1:] == "s":  # plurals: the term's pattern allows the suffix
            terms = (terms or []) + table.get(key[:-1], []) + (table.get(key[:-2], []) if key[-2:] == "es" else [])
        for term in terms or ():
            if term.pattern.fullmatch(tok):
                return term
        return None

    def _inside(self, tok: str, key: str) -> BlockedTerm | None:
        if self._anywhere_re is None or not self._anywhere_re.search(key):
            return None
        for term in self._anywhere:
            if term.key in key and term.pattern.search(tok):
                return term
        return None

    def _letters(self, joined: str) -> BlockedTerm | None:
        """Spaced single letters: any stretch of them may spell a word ("a n u d e cat")."""
        hit = self._inside(joined, _collapse(joined))
        for i in range(len(joined)):
            for j in range(i + 2, len(joined) + 1):
                if hit is not None:
                    return hit
                part = joined[i:j]
                hit = self._word(part, _collapse(part), self._words)
        return hit
