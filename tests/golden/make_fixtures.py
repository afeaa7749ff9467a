"""Regenerate the golden test's pinned inputs: ``tokenizer.json`` and ``tree.npz``.

The golden loss curve (``tests/test_train_end_to_end.py::test_golden_loss_curve``) trains on the
test corpus with these two committed files instead of training a tokenizer and building a tree,
so the curve changes only when the training loop, the model, the loss or the data order change.
Run this only when the fixtures themselves must change (then re-record the curve):

    uv run tests/golden/make_fixtures.py && TDLM_UPDATE_GOLDEN=1 uv run pytest -k golden
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from conftest import write_corpus  # noqa: E402  (the test corpus, shared with the fixtures)
from tdlm_train.corpus import CorpusConfig, load_documents, split_documents  # noqa: E402
from tdlm_train.tokenizer import train_bpe  # noqa: E402
from tdlm_tree import cooccurrence_tree, save_tree  # noqa: E402

VOCAB, BRANCHING, VAL_FRACTION = 300, 8, 0.1  # as in tests/conftest.py's small_args


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        corpus = write_corpus(Path(folder))
        docs = load_documents(CorpusConfig(source=str(corpus / "*.txt")))
        train, _ = split_documents(docs, VAL_FRACTION)
        tokenizer = train_bpe((text for _, text in train), VOCAB)
        stream = np.concatenate(
            [ids + [tokenizer.eos_id] for ids in tokenizer.encode_batch([t for _, t in train])]
        )
    tree = cooccurrence_tree(
        stream, tokenizer.vocab_size, BRANCHING, seed=0,
        tokenizer_fingerprint=tokenizer.fingerprint,
    )
    tokenizer.save(HERE / "tokenizer.json")
    save_tree(tree, HERE / "tree.npz")
    print(f"wrote {HERE}/tokenizer.json ({tokenizer.fingerprint}) and tree.npz {tree}")


if __name__ == "__main__":
    main()
