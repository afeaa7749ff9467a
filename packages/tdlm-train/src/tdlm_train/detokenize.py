"""The zero-shot sets' detokenisers: undoing each corpus's tokenisation artefacts before scoring.

Several evaluation corpora ship pre-tokenised text (WikiText's ``@-@`` number separators and
spaced punctuation, PTB's ``<unk>`` and ``N``, LM1B's spaced punctuation). A model trained on raw
web text scores such text far worse than the same content written normally, so the field
(GPT-2, Radford et al. 2019, §3.1: "invertible de-tokenizers"; then SEDD and MDLM) rewrites it
first. These are MDLM's rules (kuleshov-group/mdlm, ``dataloader.py``: ``wt_detokenizer``,
``ptb_detokenizer``, ``lm1b_detokenizer``, ``lambada_detokenizer``,
``scientific_papers_detokenizer``), rule for rule and in the same order, so that a perplexity
measured here is measured on the same strings as MDLM's table. AG News has no detokeniser.
"""

import re
from collections.abc import Callable

__all__ = ["DETOKENIZERS", "wikitext", "ptb", "lm1b", "lambada", "scientific_papers"]

# A rule is a literal replacement (str, str) or a regular-expression substitution (Pattern, str).
Rule = tuple[str | re.Pattern, str]


def _apply(text: str, rules: list[Rule]) -> str:
    for pattern, replacement in rules:
        if isinstance(pattern, re.Pattern):
            text = pattern.sub(replacement, text)
        else:
            text = text.replace(pattern, replacement)
    return text


def _bracketed(left: str, right: str) -> Rule:
    """``( a b )`` -> ``(a b)``: the spaces just inside a bracket pair go (non-greedy)."""
    inner = "[^" + re.escape(right) + "]"
    return re.compile(re.escape(left) + r"\s*(" + inner + r"*?)\s*" + re.escape(right)), (
        left + r"\1" + right
    )


_WIKITEXT: list[Rule] = [
    ("s '", "s'"),  # possessive plural
    (re.compile(r"/' [0-9]/"), r"/'[0-9]/"),  # kept as in MDLM (it matches almost nothing)
    (" @-@ ", "-"),  # number separators: 1 @,@ 000 -> 1,000
    (" @,@ ", ","),
    (" @.@ ", "."),
    (" : ", ": "),  # punctuation
    (" ; ", "; "),
    (" . ", ". "),
    (" ! ", "! "),
    (" ? ", "? "),
    (" , ", ", "),
    _bracketed("(", ")"),
    _bracketed("[", "]"),
    _bracketed("{", "}"),
    _bracketed('"', '"'),
    _bracketed("'", "'"),
    ("= = = =", "===="),  # section headings
    ("= = =", "==="),
    ("= =", "=="),
    (" \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"),
    (" \n", "\n"),
    ("\n ", "\n"),
    (" N ", " 1 "),
    (" 's", "'s"),
]

_PTB: list[Rule] = [
    (" 's", "'s"),
    ("s ' ", "s' "),
    (" n't", "n't"),
    (" \n ", "\n"),
    ("\\/", "/"),
    # " N N " needs two passes (matches do not overlap); MDLM runs ten.
    *[(" N ", " 1 ")] * 10,
    ("$ 1", "$1"),
    ("# 1", "#1"),
    ("<unk>", "?"),
]

_LM1B: list[Rule] = [
    ("http : / / ", "http://"),
    ("https : / / ", "https://"),
    (re.compile(r" '(\w+)"), r"'\1"),
    (re.compile(r" (\w+) \. "), r" \1. "),
    (re.compile(r" (\w+) \.$"), r" \1."),
    (" ? ", "? "),
    (re.compile(r" \?$"), "?"),
    (" ! ", "! "),
    (re.compile(r" \!$"), "!"),
    (" , ", ", "),
    (" : ", ": "),
    (" ; ", "; "),
    (" / ", "/"),
    (re.compile(r"\" ([^\"]+) \""), r'"\1"'),
    (re.compile(r"' ([^']+) '"), r"'\1'"),
    (re.compile(r"\( ([^\(\)]+) \)"), r"(\1)"),
    (re.compile(r"\[ ([^\[\]]+) \]"), r"[\1]"),
    ("$ ", "$"),
    ("\N{POUND SIGN} ", "\N{POUND SIGN}"),
]


def wikitext(text: str) -> str:
    return _apply(text, _WIKITEXT)


def ptb(text: str) -> str:
    return _apply(text, _PTB)


def lm1b(text: str) -> str:
    return _apply(text, _LM1B)


def lambada(text: str) -> str:
    """Curly quotes straightened; each passage starts on a new line (as MDLM scores it)."""
    text = text.replace("\N{LEFT DOUBLE QUOTATION MARK}", '"')
    return "\n" + text.replace("\N{RIGHT DOUBLE QUOTATION MARK}", '"').strip()


def scientific_papers(text: str) -> str:
    """arXiv and PubMed (the ``scientific_papers`` dataset): WikiText's rules, then LM1B's."""
    return lm1b(wikitext(text))


DETOKENIZERS: dict[str, Callable[[str], str]] = {
    "wikitext": wikitext,
    "ptb": ptb,
    "lm1b": lm1b,
    "lambada": lambada,
    "scientific_papers": scientific_papers,
}
