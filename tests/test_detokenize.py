"""Every rule of every zero-shot detokeniser is exercised (issue 27): MDLM's rules
(kuleshov-group/mdlm, ``dataloader.py``), each with a hand-written case whose expected string is
what that rule, in its place in the order, makes of the corpus's artefact. The check that the
cases cover the rules is run here too: with any one rule removed from its list, some case of
that detokeniser fails — so a rule deleted, reordered past its case or changed is caught."""

import pytest

from tdlm_train import detokenize
from tdlm_train.detokenize import _LM1B, _PTB, _WIKITEXT, _apply

DEGREE, POUND = "\N{DEGREE SIGN}", "\N{POUND SIGN}"
LEFT, RIGHT = "\N{LEFT DOUBLE QUOTATION MARK}", "\N{RIGHT DOUBLE QUOTATION MARK}"

WIKITEXT = [
    ("the players ' cars", "the players' cars"),  # "s '" (a plural possessive)
    ("a/' 5/b", "a/'[0-9]/b"),  # MDLM's r"/' [0-9]/" rule, literal replacement and all
    ("a well @-@ known man", "a well-known man"),
    ("in 1 @,@ 000 years", "in 1,000 years"),
    ("a 3 @.@ 5 m wall", "a 3.5 m wall"),
    ("note : this", "note: this"),
    ("one ; two", "one; two"),
    ("the end . Then", "the end. Then"),
    ("wow ! yes", "wow! yes"),
    ("why ? no", "why? no"),
    ("one , two", "one, two"),
    ("the ( big ) dog", "the (big) dog"),
    ("a [ 1 ] b", "a [1] b"),
    ("a { x } b", "a {x} b"),
    ('he said " yes " and', 'he said "yes" and'),
    ("a ' b ' c", "a 'b' c"),
    (" = = = = Four = = = = \n", " ==== Four ====\n"),
    # Only an odd run of five tells "= = = =" from "= = =" then "= =": those give "==== =".
    (" = = = = = Five = = = = = \n", " ===== Five =====\n"),
    (" = = = Three = = = \n", " === Three ===\n"),
    (" = = Two = = \n", " == Two ==\n"),
    (f"it was 20 {DEGREE} C", f"it was 20{DEGREE}C"),
    ("the end \n", "the end\n"),
    ("a\n b", "a\nb"),
    ("he had N cars", "he had 1 cars"),
    ("the dog 's bone", "the dog's bone"),
]

PTB = [
    ("the dog 's bone", "the dog's bone"),
    ("the players ' union", "the players' union"),
    ("they did n't go", "they didn't go"),
    ("one \n two", "one\ntwo"),
    ("a 1\\/2 stake", "a 1/2 stake"),
    ("it rose N to", "it rose 1 to"),
    ("it rose N N N N to", "it rose 1 1 1 1 to"),  # " N " twice: matches do not overlap
    ("a $ N million", "a $1 million"),
    ("a # N seed", "a #1 seed"),
    ("the <unk> said", "the ? said"),
]

LM1B = [
    ("see http : / / x.org now", "see http://x.org now"),
    ("see https : / / x.org now", "see https://x.org now"),
    ("it isn 't so", "it isn't so"),
    ("he said . Then", "he said. Then"),
    ("he said .", "he said."),
    ("why ? no", "why? no"),
    ("why ?", "why?"),
    ("wow ! yes", "wow! yes"),
    ("wow !", "wow!"),
    ("one , two", "one, two"),
    ("note : this", "note: this"),
    ("one ; two", "one; two"),
    ("black and / or white", "black and/or white"),
    ('he said " yes " and', 'he said "yes" and'),
    ("a ' b c ' d", "a 'b c' d"),
    ("the ( big ) dog", "the (big) dog"),
    ("a [ 1 ] b", "a [1] b"),
    ("it costs $ 5", "it costs $5"),
    (f"it costs {POUND} 4", f"it costs {POUND}4"),
]

RULES = {"wikitext": (_WIKITEXT, WIKITEXT), "ptb": (_PTB, PTB), "lm1b": (_LM1B, LM1B)}


# Rows with several artefacts at once, as the corpora have them.
@pytest.mark.parametrize(
    ("name", "raw", "clean"),
    [
        ("wikitext", " = = History = = \n", " == History ==\n"),
        ("wikitext", "in 1 @,@ 000 years , a well @-@ known 3 @.@ 5 m wall", "in 1,000 years, a "
         "well-known 3.5 m wall"),
        ("wikitext", 'the ( big ) dog said " yes " ; ok', 'the (big) dog said "yes"; ok'),
        # MDLM's quote-pairing rule pairs apostrophes too; reproduced as is, quirk included.
        ("wikitext", "the players ' union 's rules", "the players'union's rules"),
        ("ptb", " the company 's shares did n't rise N N <unk>",
         " the company's shares didn't rise 1 1 ?"),
        ("ptb", "a $ N million 1\\/2 stake", "a $1 million 1/2 stake"),
        ("lm1b", "see http : / / x.org , he said .", "see http://x.org, he said."),
        ("lm1b", 'It was " fine " ( mostly ) ?', 'It was "fine" (mostly)?'),
        ("lm1b", "it costs $ 5 or \N{POUND SIGN} 4 and isn 't", "it costs $5 or \N{POUND SIGN}4 "
         "and isn't"),
        ("lambada", "\N{LEFT DOUBLE QUOTATION MARK}Hi\N{RIGHT DOUBLE QUOTATION MARK} she said. ",
         '\n"Hi" she said.'),
    ],
)  # fmt: skip
def test_whole_rows_as_each_corpus_writes_them(name, raw, clean):
    assert detokenize.DETOKENIZERS[name](raw) == clean


@pytest.mark.parametrize(
    ("name", "raw", "clean"),
    [(name, raw, clean) for name, (_, cases) in RULES.items() for raw, clean in cases],
)
def test_each_rule_undoes_its_artefact(name, raw, clean):
    assert detokenize.DETOKENIZERS[name](raw) == clean


@pytest.mark.parametrize("name", list(RULES))
def test_every_rule_is_needed_by_some_case(name):
    """Remove one rule (all its copies: PTB repeats " N " ten times, as MDLM loops) and some
    case must change: no rule of the list goes untested."""
    rules, cases = RULES[name]
    for rule in dict.fromkeys(rules):
        without = [r for r in rules if r != rule]
        assert any(_apply(raw, without) != clean for raw, clean in cases), (name, rule)


def test_ptb_needs_more_than_one_pass_of_its_number_rule():
    once = [r for i, r in enumerate(_PTB) if r != (" N ", " 1 ") or i == _PTB.index(r)]
    assert _apply("it rose N N N N to", once) == "it rose 1 N 1 N to"
    assert detokenize.ptb("it rose N N N N to") == "it rose 1 1 1 1 to"


def test_lambada_straightens_quotes_strips_and_starts_a_line():
    assert detokenize.lambada(f"{LEFT}Hi{RIGHT} she said. ") == '\n"Hi" she said.'
    assert detokenize.lambada(f"  a {LEFT}b{LEFT} c\n") == '\na "b" c'  # each rule on its own
    assert detokenize.lambada(f"{RIGHT}") == '\n"'
    assert detokenize.lambada("plain") == "\nplain"


def test_scientific_papers_are_wikitext_then_lm1b():
    raw = "it has 1 @,@ 000 samples , the model 's loss is low ."
    assert detokenize.scientific_papers(raw) == "it has 1,000 samples, the model's loss is low."
    # WikiText first: its " @-@ " and headings; then LM1B: its trailing " ." and "$ ".
    assert detokenize.scientific_papers("a well @-@ known $ 5 fee .") == "a well-known $5 fee."
    assert detokenize.scientific_papers(" = = Methods = = \n") == " == Methods ==\n"
    # The order matters: WikiText pairs the quotes first, then LM1B glues " 'b" to the word.
    assert detokenize.scientific_papers("a ' b ' c") == "a'b' c"
    assert detokenize.wikitext(detokenize.lm1b("a ' b ' c")) == "a 'b' c"
