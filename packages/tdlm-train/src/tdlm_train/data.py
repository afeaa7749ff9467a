"""Data preparation with caches: corpus -> tokenizer -> token streams -> vocabulary tree.

Each stage is cached under ``cache_dir`` by a key that hashes everything it depends on, and each
cache entry is written atomically with a JSON manifest written last: an entry is either
complete and reused on the next run, or absent and rebuilt.

* ``tokenizers/<key>/tokenizer.json`` — the trained BPE (key: training documents, settings);
* ``tokens/<key>/{train,val}.bin`` + ``manifest.json`` — the wrapped token streams (documents
  joined, each followed by EOS; ``uint16`` or ``uint32``), memory-mapped when used; the manifest
  also records the validation split's UTF-8 byte count for bits per byte;
* ``trees/<key>.npz`` — the vocabulary tree built from the training tokens (tdlm-tree format).

A cache write that fails (a full disk, no permission) is one line naming the entry and the room
left, and leaves nothing behind; marked temporaries of a killed writer are removed on the next
run (:func:`.atomic.remove_stale`), and nothing else in ``cache_dir`` is ever touched. Documents
are tokenized in bounded pieces (:func:`.corpus.text_pieces`) and streamed to the cache file, so
memory does not grow with one document's size.
"""

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from tdlm_tree import (
    METHODS,
    TreeError,
    VocabTree,
    build_tree,
    flat_tree,
    load_tree,
    save_tree,
)

from .atomic import remove_stale, replace_dir, temp_dir_beside, write_json
from .checkpoint import resolve_checkpoint
from .corpus import (
    CorpusConfig,
    Document,
    corpus_fingerprint,
    corpus_pins,
    load_documents,
    split_documents,
    text_pieces,
)
from .errors import UserError
from .tokenizer import TextTokenizer, TokenizerConfig, load_tokenizer, train_bpe

__all__ = ["TreeConfig", "PreparedData", "prepare_data", "prepare_tree"]

logger = logging.getLogger(__name__)
_CACHE_VERSION = 1
# Part of the tree cache key: bump it whenever a construction changes what it builds (2: the
# k-means constructions became exact on every BLAS and thread count; 3: their assignment looks
# among each group's 1,024 nearest centroids, which changes levels of more than 1,024 groups).
_TREE_CACHE_VERSION = 3


@dataclass(frozen=True, kw_only=True)
class TreeConfig:
    """How the vocabulary tree is made (docs/method.md §2), or ``path`` to a saved one."""

    method: str = "cooccurrence"  # cooccurrence | frequency | random | embedding | flat
    branching: int = 64  # K, children per node
    leaf_cluster_size: int = 0  # children per level-1 node (0: K at every level)
    seed: int = 0  # seed of the tree construction
    embeddings: str = ""  # embedding method: a trained run whose token input embeddings to cluster
    path: str = ""  # a tree saved by tdlm-tree; overrides the fields above

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"tree.method must be one of {METHODS}, got {self.method!r}")
        if self.branching < 2 or self.leaf_cluster_size < 0:
            raise UserError("tree.branching must be >= 2 and tree.leaf_cluster_size >= 0")


@dataclass
class PreparedData:
    """Everything training needs from the data side."""

    tokenizer: TextTokenizer
    train_tokens: np.ndarray  # [T_train] memory-mapped wrapped stream
    val_tokens: np.ndarray  # [T_val]
    token_bytes: np.ndarray  # [N] UTF-8 bytes per token id (0 for BOS/EOS): bits per byte
    cache_dir: Path
    pins: dict  # the corpus's fingerprints (:func:`.corpus.corpus_pins`), for checkpoints


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


_T = TypeVar("_T")
_MIB = 2**20


def _cache_write(entry: Path, write: Callable[[], _T]) -> _T:
    """``write()`` a cache entry; a failure is one line and leaves nothing (the atomic writes
    remove their temporaries)."""
    try:
        return write()
    except OSError as error:
        try:
            free = f"; {shutil.disk_usage(entry.parent).free / _MIB:,.0f} MiB free there"
        except OSError:
            free = ""
        raise UserError(
            f"could not write the cache entry {entry} ({error.strerror or error}{free}); nothing "
            "was left there. Free some room or pass another --cache_dir"
        ) from None


def _pieces(docs: list[Document]) -> Iterator[str]:
    for _, text in docs:
        yield from text_pieces(text)


def _tokenizer_for(config: TokenizerConfig, train: list[Document], cache: Path) -> TextTokenizer:
    if config.name != "bpe":
        return load_tokenizer(config.name)
    key = _key(_CACHE_VERSION, corpus_fingerprint(train), config.vocab_size, config.min_frequency)
    path = cache / "tokenizers" / key / "tokenizer.json"
    if path.is_file():
        return load_tokenizer(str(path))
    logger.info("training a %d-token byte-level BPE on %d documents", config.vocab_size, len(train))
    tokenizer = train_bpe(_pieces(train), config.vocab_size, config.min_frequency)
    if tokenizer.vocab_size < config.vocab_size:  # BPE ran out of pairs seen min_frequency times
        logger.warning(
            "the training split supports only a %d-token BPE (asked for %d; pairs must occur "
            "%d times): the model's vocabulary is %d",
            tokenizer.vocab_size,
            config.vocab_size,
            config.min_frequency,
            tokenizer.vocab_size,
        )
    _cache_write(path, lambda: tokenizer.save(path))
    return tokenizer


# At most this many characters go to the tokenizer in one batch (its encodings hold offsets and
# strings per token, ~200 bytes each: a batch of 1 Mi characters works in about 50 MiB).
_BATCH_CHARS = 2**20


def _write_stream(
    tokenizer: TextTokenizer, docs: list[Document], path: Path, dtype: np.dtype
) -> int:
    """Tokenize ``docs`` into ``path``: each document's tokens then EOS (MDLM's wrapped stream),
    written batch by batch; returns the number of tokens."""
    total = 0
    with open(path, "wb") as f:
        batch: list[str] = []
        ends: list[bool] = []  # whether each piece ends its document
        chars = 0

        def flush() -> None:
            nonlocal total, chars
            for ids, last in zip(tokenizer.encode_batch(batch), ends, strict=True):
                ids = ids + [tokenizer.eos_id] if last else ids
                np.asarray(ids, dtype=dtype).tofile(f)
                total += len(ids)
            batch.clear(), ends.clear()
            chars = 0

        for _, text in docs:
            pieces = list(text_pieces(text)) if len(text) > _BATCH_CHARS else [text]
            for i, piece in enumerate(pieces):
                batch.append(piece)
                ends.append(i == len(pieces) - 1)
                chars += len(piece)
                if chars >= _BATCH_CHARS or len(batch) >= 256:
                    flush()
        if batch:
            flush()
    return total


def _load_token_cache(entry: Path) -> tuple[np.ndarray, np.ndarray, dict] | None:
    manifest_path = entry / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        dtype = np.dtype(manifest["dtype"])
        streams = []
        for split in ("train", "val"):
            stream = np.memmap(entry / f"{split}.bin", dtype=dtype, mode="r")
            if len(stream) != manifest[f"{split}_tokens"]:
                raise ValueError(f"{split}.bin has {len(stream)} tokens")
            streams.append(stream)
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("token cache %s is damaged (%s); rebuilding it", entry, error)
        return None
    return streams[0], streams[1], manifest


def _utf8_bytes(text: str) -> int:
    return sum(len(piece.encode()) for piece in text_pieces(text))


def _build_token_cache(
    entry: Path, corpus: CorpusConfig, tokenizer: TextTokenizer, train: list, val: list
) -> None:
    logger.info("tokenizing %d train / %d validation documents", len(train), len(val))
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32)
    tmp = temp_dir_beside(entry)
    try:
        counts = {
            split: _write_stream(tokenizer, docs, tmp / f"{split}.bin", dtype)
            for split, docs in (("train", train), ("val", val))
        }
        manifest = {
            "version": _CACHE_VERSION,
            "corpus": asdict(corpus),
            "tokenizer_fingerprint": tokenizer.fingerprint,
            "dtype": dtype.name,
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "train_documents": len(train),
            "val_documents": len(val),
            "val_bytes": sum(_utf8_bytes(text) for _, text in val),
        }
        write_json(tmp / "manifest.json", manifest)
        replace_dir(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_cache(cache_dir: Path) -> None:
    for folder in (cache_dir / name for name in ("tokenizers", "tokens", "trees")):
        for path in remove_stale(folder):
            logger.info("removed %s, left by a cache writer that was killed", path)


def prepare_data(
    corpus: CorpusConfig,
    tokenizer_config: TokenizerConfig,
    cache_dir: Path,
    *,
    tokenizer: TextTokenizer | None = None,
    check_corpus: Callable[[dict], None] | None = None,
) -> PreparedData:
    """Load, split, tokenize and cache the corpus (reusing every cache entry that matches).
    ``tokenizer``: tokenize with this one (a resumed run's own) instead of the configured one;
    ``check_corpus`` is given the corpus's pins before any tokenizer training or tokenizing."""
    for part in (cache_dir, *cache_dir.parents):
        if part.exists() and not part.is_dir():
            raise UserError(f"--cache_dir {cache_dir}: {part} is a file, not a folder")
    _remove_stale_cache(cache_dir)
    docs = load_documents(corpus)
    pins = corpus_pins(docs)
    if check_corpus is not None:
        check_corpus(pins)
    train, val = split_documents(docs, corpus.val_fraction)
    del docs  # a one-document corpus is split into copies: keep one copy of the text, not two
    if tokenizer is None:
        tokenizer = _tokenizer_for(tokenizer_config, train, cache_dir)
    key = _key(_CACHE_VERSION, pins["fingerprint"], corpus.val_fraction, tokenizer.fingerprint)
    entry = cache_dir / "tokens" / key
    cached = _load_token_cache(entry)
    if cached is None:
        _cache_write(entry, lambda: _build_token_cache(entry, corpus, tokenizer, train, val))
        cached = _load_token_cache(entry)
        assert cached is not None
    train_tokens, val_tokens, manifest = cached
    token_bytes = tokenizer.token_bytes()
    _check_token_bytes(token_bytes, val_tokens, int(manifest["val_bytes"]))
    return PreparedData(
        tokenizer, train_tokens, val_tokens, token_bytes, cache_dir, pins
    )


def _check_token_bytes(token_bytes: np.ndarray, stream: np.ndarray, text_bytes: int) -> None:
    """Warn when per-token byte counts do not add up to the validation text's UTF-8 bytes.

    They do exactly for byte-level tokenizers; a normalising or SentencePiece-style tokenizer
    makes bits per byte approximate by the difference, which the warning states.
    """
    counted = int(token_bytes[np.asarray(stream)].sum())
    if counted != text_bytes:
        logger.warning(
            "bits per byte: the tokens of the validation split stand for %d bytes, its text has "
            "%d (%+.2f%%; the tokenizer is not byte-level or normalises text)",
            counted,
            text_bytes,
            100 * (counted - text_bytes) / max(1, text_bytes),
        )


def run_embeddings(source: str, tokenizer: TextTokenizer) -> np.ndarray:
    """``[N, d]`` float32: the input embedding rows of the tokens in a trained run (EMA weights).

    Rows ``0..N-1`` of ``embed.weight`` are the leaves (token ids) of any tree, MDLM's flat tree
    included. The run must share this tokenizer, or its rows would name other tokens.
    """
    checkpoint = resolve_checkpoint(Path(source), "tree.embeddings")
    theirs = checkpoint.parent.parent / "tokenizer.json"
    if not theirs.is_file() or load_tokenizer(str(theirs)).fingerprint != tokenizer.fingerprint:
        raise UserError(
            f"tree.embeddings {source}: that run was trained with another tokenizer (or has no "
            "tokenizer.json); train it on this corpus and tokenizer"
        )
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(checkpoint / "ema.safetensors", framework="numpy") as f:
            weight = f.get_tensor("embed.weight")
    except (OSError, SafetensorError, KeyError) as error:
        raise UserError(
            f"tree.embeddings {checkpoint}: no readable embed.weight ({error})"
        ) from None
    if weight.ndim != 2 or weight.shape[0] < tokenizer.vocab_size:
        raise UserError(
            f"tree.embeddings {checkpoint}: embed.weight has shape {weight.shape}, expected at "
            f"least {tokenizer.vocab_size} rows"
        )
    return np.ascontiguousarray(weight[: tokenizer.vocab_size], dtype=np.float32)


def prepare_tree(config: TreeConfig, data: PreparedData, *, flat: bool = False) -> VocabTree:
    """This tokenizer's vocabulary tree: flat for MDLM, a given file, or a cached build."""
    n, fingerprint = data.tokenizer.vocab_size, data.tokenizer.fingerprint
    if flat or config.method == "flat":
        return flat_tree(n, tokenizer_fingerprint=fingerprint)
    if config.path:
        try:
            tree = load_tree(config.path, vocab_size=n, tokenizer_fingerprint=fingerprint)
        except TreeError as error:
            raise UserError(f"tree.path: {error}") from None
        if tree.tokenizer_fingerprint is None:
            logger.warning(
                "warning: --tree.path %s records no tokenizer fingerprint, so nothing checks that "
                "it was built for this tokenizer (only the vocabulary size, %d, matches); a tree "
                "of another tokenizer would train without error but group unrelated tokens. "
                "Build trees with --tokenizer-fingerprint.",
                config.path,
                n,
            )
        return tree
    shape = {"leaf_cluster_size": config.leaf_cluster_size or None}
    vectors = None
    identity = asdict(config)
    if config.method == "embedding":
        if not config.embeddings:
            raise UserError("tree.method embedding needs tree.embeddings (a trained run folder)")
        vectors = run_embeddings(config.embeddings, data.tokenizer)
        # Keyed by the vectors themselves: retraining the source run rebuilds the tree.
        identity["embeddings"] = hashlib.sha256(vectors.tobytes()).hexdigest()
    key = _key(_TREE_CACHE_VERSION, fingerprint, identity, len(data.train_tokens))
    path = data.cache_dir / "trees" / f"{key}.npz"
    if path.is_file():
        try:
            return load_tree(path, vocab_size=n, tokenizer_fingerprint=fingerprint)
        except TreeError as error:
            logger.warning("cached tree is damaged (%s); rebuilding it", error)
    ids = np.asarray(data.train_tokens, dtype=np.int64)
    logger.info("building a %s tree (K=%d) over %d tokens", config.method, config.branching, n)
    tree = build_tree(
        config.method,
        n,
        config.branching,
        tokens=ids,
        vectors=vectors,
        seed=config.seed,
        tokenizer_fingerprint=fingerprint,
        **shape,
    )
    _cache_write(path, lambda: save_tree(tree, path))
    return tree
