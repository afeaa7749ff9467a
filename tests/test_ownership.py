"""The user's files are the user's (issue 28): what TDLM writes in a folder, what it never
touches, and resume that is exact or refuses.

Each data-loss case of the issue is replayed: a ``--run_dir`` of the user's files, an export
``--out`` that is a link, a corpus changed under ``--resume``; then the unclear cases, each one
line; last, a hypothesis property: folders pre-filled with arbitrary user files keep every one
byte for byte through train, resume, eval, sample and export, whether these succeed or refuse.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tdlm_train import data as data_module
from tdlm_train.atomic import remove_stale, write_json
from tdlm_train.checkpoint import list_checkpoints
from tdlm_train.cli import eval_main, export_main, sample_main, train_main
from tdlm_train.corpus import CorpusConfig, load_documents, text_pieces
from tdlm_train.data import prepare_data
from tdlm_train.errors import UserError
from tdlm_train.run_folder import RUN_NAMES
from tdlm_train.tokenizer import TokenizerConfig, train_bpe

from .conftest import write_corpus


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def _snapshot(folder: Path) -> dict[str, object]:
    """Every entry under ``folder``: a file's bytes, a link's target, a folder's marker."""
    found: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = ("link", os.readlink(path))
        elif path.is_dir():
            found[name] = "folder"
        else:
            found[name] = path.read_bytes()
    return found


def _kept(before: dict[str, object], folder: Path) -> None:
    after = _snapshot(folder)
    changed = [name for name, value in before.items() if after.get(name) != value]
    assert not changed, f"the user's {changed} changed or went"


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_args):
    """A 3-step run (copied by the tests that change it) and an export of it."""
    root = tmp_path_factory.mktemp("owned")
    assert train_main(small_args(root / "run", max_steps=3)) == 0
    assert export_main(["--checkpoint", str(root / "run"), "--out", str(root / "export")]) == 0
    return root / "run", root / "export"


# --- 1. a run folder of the user's files ----------------------------------------------------
def test_a_folder_of_the_users_files_is_refused_untouched(
    tmp_path, small_args, capsys, no_data_work
):
    folder = tmp_path / "mine"
    (folder / "checkpoints").mkdir(parents=True)
    for name, text in {
        "thesis.old": "chapter 1",
        "config.json": '{"mine": true}',
        "checkpoints/run.old": "a copy",
        ".draft.tmp": "draft",
        ".lock": "my lock",
    }.items():
        (folder / name).write_text(text)
    before = _snapshot(folder)
    assert train_main(small_args(folder)) == 2
    (line,) = _errors(capsys)
    assert line.startswith(f"error: --run_dir {folder} holds files TDLM did not write (")
    assert line.endswith("or pass --adopt_run_dir to train there beside them")
    assert _snapshot(folder) == before  # not one name added, renamed or changed
    assert train_main([*small_args(folder), "--resume"]) == 2
    assert _snapshot(folder) == before


def test_adopting_trains_beside_the_users_files_unless_a_name_collides(
    tmp_path, small_args, capsys
):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "summary.txt").write_text("my summary")  # a name a run writes
    before = _snapshot(folder)
    assert train_main([*small_args(folder, max_steps=1), "--adopt_run_dir"]) == 2
    (line,) = _errors(capsys)
    assert line == (
        f"error: --adopt_run_dir: {folder} already holds summary.txt, which a run writes; move "
        "them or choose another --run_dir"
    )
    assert _snapshot(folder) == before
    (folder / "summary.txt").unlink()
    before = _snapshot(folder)
    assert train_main([*small_args(folder, max_steps=1), "--adopt_run_dir"]) == 0
    _kept(before, folder)
    assert list_checkpoints(folder) and (folder / ".tdlm-run.json").is_file()
    written = {p.name for p in folder.iterdir()} - {"notes.txt"}
    assert written <= set(RUN_NAMES)
    # Marked now: it resumes without --adopt_run_dir, the user's file still kept.
    assert train_main([*small_args(folder, max_steps=2), "--resume"]) == 0
    _kept(before, folder)


def test_an_empty_folder_a_symlinked_one_and_an_older_run_folder_are_used(
    tmp_path, finished, small_args
):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train_main(small_args(empty, max_steps=1)) == 0
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert train_main(small_args(link, max_steps=1)) == 0
    assert link.is_symlink() and list_checkpoints(real)
    older = tmp_path / "older"  # as an earlier version wrote it: no mark
    shutil.copytree(finished[0], older)
    (older / ".tdlm-run.json").unlink()
    assert train_main([*small_args(older, max_steps=4), "--resume"]) == 0
    assert (older / ".tdlm-run.json").is_file()


# --- 2. export: a link stays a link, stale temporaries are the project's only ---------------
def test_an_export_into_a_link_keeps_the_link_and_cleans_only_marked_leftovers(
    tmp_path, finished, capsys
):
    run_dir, _ = finished
    target = tmp_path / "models" / "v1"
    target.mkdir(parents=True)
    link = tmp_path / "latest"
    link.symlink_to(target)
    pid = _dead_pid()
    stale = tmp_path / f".tdlm-tmp-{pid}-latest-abcd1234"  # a SIGTERM'd export's folder
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    users = {tmp_path / ".latest.abc.tmp": b"mine", tmp_path / "latest.old": b"mine too"}
    for path, data in users.items():
        path.write_bytes(data)
    for _ in range(2):  # the second replaces the first, through the link
        assert export_main(["--checkpoint", str(run_dir), "--out", str(link)]) == 0
        assert link.is_symlink() and os.readlink(link) == str(target)
        assert (target / "model.safetensors").is_file()
    assert not stale.exists()
    assert {path: path.read_bytes() for path in users} == users
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    assert export_main(["--checkpoint", str(run_dir), "--out", str(dangling)]) == 2
    assert _errors(capsys) == [
        f"error: --out {dangling} is a link to {tmp_path / 'nowhere'}, which does not exist"
    ]


def test_atomic_writes_through_a_link_keep_the_link(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "figures.json"
    link.symlink_to(target)
    write_json(link, {"new": 1})
    assert link.is_symlink() and json.loads(target.read_text()) == {"new": 1}


def test_remove_stale_spares_live_writers_and_unmarked_names(tmp_path):
    pid = _dead_pid()
    names = {
        f".tdlm-tmp-{pid}-x-12345678": "dead",
        f".tdlm-tmp-{os.getpid()}-x-12345678": "mine, writing",
        f".tdlm-tmp-{os.getppid()}-x-12345678": "a live process's",
        ".x.12345678.tmp": "user",
        "x.old": "user",
        f".tdlm-old-{pid}-gone": "the one complete copy",
        f".tdlm-old-{pid}-here": "superseded",
        "here": "current",
    }
    for name, text in names.items():
        (tmp_path / name).write_text(text)
    removed = {p.name for p in remove_stale(tmp_path)}
    assert removed == {f".tdlm-tmp-{pid}-x-12345678", f".tdlm-old-{pid}-here"}
    assert (tmp_path / "gone").read_text() == "the one complete copy"
    left = {p.name for p in tmp_path.iterdir()}
    assert left == set(names) - removed - {f".tdlm-old-{pid}-gone"} | {"gone"}


# --- 3. resume pins its data ----------------------------------------------------------------
def _greedy(checkpoint: Path, capsys) -> str:
    argv = ["--checkpoint", str(checkpoint), "--temperature", "0", "--count", "1", "--length", "16"]
    capsys.readouterr()
    assert sample_main(argv) == 0
    return capsys.readouterr().out.split("\n", 1)[1]  # the text, without the header line


def test_resume_refuses_a_changed_corpus_or_continues_without_touching_the_pinned_files(
    tmp_path, small_args, capsys, caplog
):
    (tmp_path / "corpus").mkdir()
    corpus = write_corpus(tmp_path / "corpus")
    folder = tmp_path / "run"

    def args(**extra):
        return small_args(folder, **{"data.source": str(corpus / "*.txt"), **extra})

    assert train_main(args(max_steps=3)) == 0
    step3 = folder / "checkpoints" / "step_00000003"
    pinned = {
        name: (folder / name).read_bytes() for name in ("tokenizer.json", "tree.npz", "counts.npy")
    }
    text = _greedy(step3, capsys)
    (corpus / "doc01.txt").write_text("entirely new words: zebra quantum xylophone. " * 40)
    (corpus / "doc02.txt").unlink()
    (corpus / "doc99.txt").write_text("a newcomer document of words. " * 30)
    assert train_main([*args(max_steps=6), "--resume"]) == 2
    (line,) = _errors(capsys)
    assert "the corpus changed since step_00000003 was trained (edited doc01.txt; removed " in line
    assert "removed doc02.txt; added doc99.txt)" in line and "--allow_changed_data" in line
    assert [s for s, _ in list_checkpoints(folder)] == [3]

    assert train_main([*args(max_steps=6), "--resume", "--allow_changed_data"]) == 0
    assert "warning: the corpus changed since step_00000003" in caplog.text
    capsys.readouterr()
    assert {name: (folder / name).read_bytes() for name in pinned} == pinned
    assert _greedy(step3, capsys) == text  # the old checkpoint decodes with its own tokenizer
    latest = json.loads((folder / "checkpoints" / "step_00000006" / "state.json").read_text())
    assert "doc99.txt" in latest["data"]["sources"]  # the new checkpoint pins what it saw


def test_a_checkpoint_refuses_a_run_folder_whose_tokenizer_and_tree_were_replaced(
    tmp_path, finished, small_args, capsys
):
    """What the old resume did on a changed corpus: a retrained BPE and its tree, consistent
    with each other (so the tree's own check passes) but not the checkpoint's."""
    from tdlm_tree import random_tree, save_tree

    folder = tmp_path / "run"
    shutil.copytree(finished[0], folder)
    docs = load_documents(CorpusConfig(source=json.loads(
        (folder / "config.json").read_text())["data"]["source"]))  # fmt: skip
    other = train_bpe([text[::-1] for _, text in docs], 300)  # other merges, same size
    assert other.vocab_size == 300
    other.save(folder / "tokenizer.json")
    save_tree(random_tree(300, 8, tokenizer_fingerprint=other.fingerprint), folder / "tree.npz")
    for app in (sample_main, eval_main):
        assert app(["--checkpoint", str(folder)]) == 2
        (line,) = _errors(capsys)
        assert "was trained with another tokenizer.json than the one beside it" in line
    assert train_main([*small_args(folder, max_steps=6), "--resume"]) == 2
    assert "another tokenizer.json" in _errors(capsys)[0]


# --- 4. one huge line, NULs, a BOM and CRLF ---------------------------------------------------
@pytest.fixture(scope="module")
def bpe(corpus):
    docs = load_documents(CorpusConfig(source=str(corpus / "*.txt")))
    return train_bpe([text for _, text in docs] + ["é中1 2\t,.'s"], 400)


_TEXT = st.text(alphabet=list("ab cd\n\t  \n.,'sé中1 2"), max_size=120)


def _expected_cut(text: str, start: int, size: int) -> int:
    """Where a piece from ``start`` must end: at the last place in its second half where a
    whitespace run (holding a space or line break) follows a non-space, else at ``size``."""
    low, high = start + size // 2, start + size
    places = []
    for j in range(low + 1, high):
        if text[j].isspace() and not text[j - 1].isspace():
            run_end = j
            while run_end < high and text[run_end].isspace():
                run_end += 1
            if any(c in " \n" for c in text[j:run_end]):
                places.append(j)
    return max(places) if places else high


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_TEXT, st.integers(2, 24))
def test_pieces_join_back_and_cut_only_where_a_word_starts(bpe, text, size):
    pieces = list(text_pieces(text, size))
    assert "".join(pieces) == text and all(len(p) <= size for p in pieces)
    start = 0
    for piece in pieces[:-1]:
        assert start + len(piece) == _expected_cut(text, start, size)
        start += len(piece)
    cuts = np.cumsum([len(p) for p in pieces[:-1]]).tolist()
    if all(text[i].isspace() and not text[i - 1].isspace() for i in cuts):
        whole = bpe.encode_batch([text])[0]
        assert [t for piece in pieces for t in bpe.encode_batch([piece])[0]] == whole


def test_a_one_line_corpus_tokenizes_in_pieces_exactly_as_whole(tmp_path, monkeypatch):
    words = np.random.default_rng(0).choice(["alpha", "beta", "gamma", "delta", "x1"], 20_000)
    (tmp_path / "one.txt").write_text(" ".join(words))  # ~120 KB, no line break
    corpus = CorpusConfig(source=str(tmp_path / "one.txt"), val_fraction=0.1)
    tokenizer = TokenizerConfig(vocab_size=300)
    whole = prepare_data(corpus, tokenizer, tmp_path / "cache-whole")
    monkeypatch.setattr("tdlm_train.corpus.PIECE_CHARS", 1000)  # many pieces, many batches
    monkeypatch.setattr(data_module, "_BATCH_CHARS", 3000)
    pieces = prepare_data(corpus, tokenizer, tmp_path / "cache-pieces")
    assert pieces.tokenizer.fingerprint == whole.tokenizer.fingerprint
    assert np.array_equal(pieces.train_tokens, whole.train_tokens)
    assert np.array_equal(pieces.val_tokens, whole.val_tokens)


def test_nul_bom_and_crlf_are_normalised_and_reported(tmp_path, caplog):
    (tmp_path / "bom.txt").write_bytes("\ufeffline one\r\nline two\r\n".encode())
    (tmp_path / "nul.txt").write_bytes(b"\0" * 64)
    (tmp_path / "mixed.txt").write_bytes(b"a\0b\r\nc\n")
    docs = dict(load_documents(CorpusConfig(source=str(tmp_path / "*.txt"))))
    assert docs == {"bom.txt": "line one\nline two\n", "mixed.txt": "ab\nc\n"}  # nul.txt: empty
    warnings = sorted(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert warnings == [
        "warning: 1 document(s) held a byte-order mark: dropped (bom.txt)",
        "warning: 2 document(s) held CRLF line ends: converted to LF (bom.txt, mixed.txt)",
        "warning: 2 document(s) held NUL characters: removed (mixed.txt, nul.txt)",
    ]
    (tmp_path / "bom.txt").unlink(), (tmp_path / "mixed.txt").unlink()
    with pytest.raises(UserError, match="holds no non-empty documents"):
        load_documents(CorpusConfig(source=str(tmp_path / "*.txt")))


# --- 5. the rest, one line each --------------------------------------------------------------
def test_generation_longer_than_training_is_refused(finished, capsys):
    run_dir, _ = finished
    assert sample_main(["--checkpoint", str(run_dir), "--length", "100000"]) == 2
    assert _errors(capsys) == [
        "error: --length 100000: the model was trained on 32-token sequences; give at most 32 "
        "(longer ones are untrained positions, and cost length^2)"
    ]
    infill = "the cat<gap:40> mat"
    assert sample_main(["--checkpoint", str(run_dir), "--infill", infill]) == 2
    assert "the model was trained on 32-token sequences" in _errors(capsys)[0]


_STUCK = """
import re, sys
from tdlm_train.cli import run_app

def body():
    print("ready", flush=True)
    re.match(r"(a+)+b", "a" * 64)  # one C call for ages: Python's SIGINT handler never runs
    return 0

sys.exit(run_app(body))
"""


def test_ctrl_c_stops_an_app_stuck_in_one_native_call():
    child = subprocess.Popen(
        [sys.executable, "-c", _STUCK], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGINT)
    try:  # without the watchdog the regex runs for hours: any exit at all shows the stop
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130
    assert err.strip().splitlines() == ["interrupted; the last checkpoint written is intact"]


def test_a_failing_cache_write_says_so_and_leaves_nothing(
    tmp_path, small_args, capsys, monkeypatch
):
    cache = tmp_path / "cache"

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data_module, "_write_stream", full)
    assert train_main(small_args(tmp_path / "run", cache_dir=cache, max_steps=1)) == 2
    (line,) = _errors(capsys)
    assert line.startswith(f"error: could not write the cache entry {cache}/tokens/")
    assert "(No space left on device;" in line and "MiB free there); nothing was left" in line
    assert [p.name for p in (cache / "tokens").iterdir()] == []  # no partial entry, no temporary
    (tmp_path / "blocked").write_text("a file")
    monkeypatch.undo()
    assert train_main(small_args(tmp_path / "run2", cache_dir=tmp_path / "blocked")) == 2
    assert _errors(capsys) == [
        f"error: --cache_dir {tmp_path / 'blocked'}: {tmp_path / 'blocked'} is a file, not a folder"
    ]


def test_a_cache_loses_only_a_killed_writers_marked_temporaries(tmp_path, small_args):
    cache = tmp_path / "cache"
    pid = _dead_pid()
    killed = cache / "tokens" / f".tdlm-tmp-{pid}-0123456789abcdef-abcd1234"
    killed.mkdir(parents=True)
    (killed / "train.bin").write_bytes(b"half")
    users = {
        cache / "tokens" / ".mine.abc.tmp": b"mine",
        cache / "trees" / "tree.npz.old": b"mine too",
        cache / "notes.txt": b"and this",
    }
    for path, data in users.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert train_main(small_args(tmp_path / "run", cache_dir=cache, max_steps=1)) == 0
    assert not killed.exists()
    assert {path: path.read_bytes() for path in users} == users


def test_eval_out_is_checked_before_scoring(tmp_path, finished, capsys, monkeypatch):
    run_dir, _ = finished

    def no_scoring(*_args, **_kwargs):
        raise AssertionError("scoring started")

    monkeypatch.setattr("tdlm_train.run.Run.from_checkpoint", no_scoring)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert eval_main(["--checkpoint", str(run_dir), "--out", str(folder)]) == 2
    assert _errors(capsys) == [
        f"error: --out {folder} is a folder; give the name of a file to write"
    ]

    def read_only(*_args, **_kwargs):  # as the probe meets a read-only folder (root or not)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.NamedTemporaryFile", read_only)
    out = tmp_path / "x.json"
    assert eval_main(["--checkpoint", str(run_dir), "--out", str(out)]) == 2
    assert _errors(capsys) == [f"error: --out {out}: cannot write there (Permission denied)"]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_an_unsafe_pickle_is_one_line_that_never_suggests_unpickling(
    tmp_path, finished, small_args, capsys
):
    folder = tmp_path / "run"
    shutil.copytree(finished[0], folder)

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    import pickle

    optimizer = folder / "checkpoints" / "step_00000003" / "optimizer.pt"
    optimizer.write_bytes(pickle.dumps(Payload()))
    assert train_main([*small_args(folder, max_steps=6), "--resume"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "optimizer.pt holds objects other than tensors" in lines[0]
    assert "weights_only" not in err
    assert not (tmp_path / "pwned").exists()


def test_unknown_keys_in_an_export_config_are_named(tmp_path, finished, caplog):
    from tdlm_train.run import Run

    folder = tmp_path / "export"
    shutil.copytree(finished[1], folder)
    meta = json.loads((folder / "config.json").read_text())
    meta |= {"tokenizer_fingerprnt": "typo", "extra": 1}
    (folder / "config.json").write_text(json.dumps(meta))
    Run.from_checkpoint(folder)
    assert (
        f"warning: {folder}/config.json has keys this tdlm-train does not know, ignored: extra, "
        "tokenizer_fingerprnt"
    ) in caplog.text


# --- 6. the property: pre-filled folders keep every user file ---------------------------------
_NAMES = st.sampled_from([
    "notes.txt", "thesis.old", "config.json.old", ".draft.tmp", "x.tmp", ".lock", "config.json",
    "README.md", "model.safetensors", "tokenizer.json", "tree.npz", "metrics.jsonl", "tokens",
    "trees", "checkpoints", "step_00000003.old", ".hidden", "a b.txt", "ünï.txt",
])  # fmt: skip
_ENTRY = st.one_of(
    st.binary(max_size=64).map(lambda b: ("file", b)),
    st.just(("link", None)),
    st.just(("folder", None)),
)
_FILES = st.dictionaries(_NAMES, _ENTRY, min_size=1, max_size=5)


def _fill(folder: Path, entries: dict, outside: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (kind, content) in entries.items():
        path = folder / name
        if kind == "file":
            path.write_bytes(content)
        elif kind == "link":
            path.symlink_to(outside)
        else:
            path.mkdir()
            (path / "inside.txt").write_text("mine")


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # each example trains: report it, do not shrink
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(run_files=_FILES, owned_files=_FILES, export_files=_FILES, cache_files=_FILES)
def test_prefilled_folders_keep_every_user_file(
    tmp_path_factory, finished, small_args, run_files, owned_files, export_files, cache_files
):
    root = tmp_path_factory.mktemp("prefilled")
    outside = root / "elsewhere.txt"
    outside.write_text("the user's file a link points to")
    run_dir, export = finished
    steps = {"max_steps": 1, "eval_batches": 1, "sample_count": 1}

    # A run folder, an export folder and a cache folder of the user's files.
    user_run, user_out, user_cache = root / "run", root / "out", root / "cache"
    _fill(user_run, run_files, outside)
    _fill(user_out, export_files, outside)
    _fill(user_cache, cache_files, outside)
    before = {f: _snapshot(f) for f in (user_run, user_out, user_cache)}
    assert train_main(small_args(user_run, **steps)) == 2  # not the project's: refused
    collides = any(name in RUN_NAMES for name in run_files)
    adopted = train_main([*small_args(user_run, **steps), "--adopt_run_dir"])
    assert adopted == (2 if collides else 0)
    assert train_main([*small_args(user_run, **steps), "--resume"]) == adopted
    assert export_main(["--checkpoint", str(run_dir), "--out", str(user_out)]) == 2
    cached = train_main(small_args(root / "fresh", cache_dir=user_cache, **steps))
    blocked = any(
        n in ("tokenizers", "tokens", "trees") and kind != "folder"
        for n, (kind, _) in cache_files.items()
    )
    assert cached == (2 if blocked else 0)
    for folder, snapshot in before.items():
        _kept(snapshot, folder)

    # The project's own run folder with the user's files added (none named as a run writes).
    owned = root / "owned"
    shutil.copytree(run_dir, owned, symlinks=True)
    mine = {n: e for n, e in owned_files.items() if n not in RUN_NAMES}
    _fill(owned, mine, outside)
    kept = {n: v for n, v in _snapshot(owned).items() if n.split("/")[0] in mine}
    assert train_main([*small_args(owned, max_steps=4, sample_count=1), "--resume"]) == 0
    out = str(owned / "eval.json")
    assert eval_main(["--checkpoint", str(owned), "--batches", "1", "--out", out]) == 0
    assert sample_main(["--checkpoint", str(owned), "--count", "1", "--length", "8"]) == 0
    assert export_main(["--checkpoint", str(owned), "--out", str(root / "export")]) == 0
    _kept(kept, owned)
    assert outside.read_text() == "the user's file a link points to"
