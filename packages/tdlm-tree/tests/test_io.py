"""Save/load: exact round trips, atomic writes, and clear rejection of every bad file."""

import json
import os
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from tdlm_tree import TreeError, frequency_tree, load_tree, random_tree, save_tree
from tdlm_tree.testing import any_trees


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(any_trees())
def test_round_trip_is_identical(tmp_path, tree):
    path = save_tree(tree, tmp_path / "tree.npz")
    loaded = load_tree(path)
    assert loaded == tree
    for h in range(tree.depth):
        np.testing.assert_array_equal(loaded.children[h], tree.children[h])
    assert not [p for p in tmp_path.iterdir() if p.name != "tree.npz"]  # no temp files left


def test_metadata_round_trip(tmp_path):
    tree = frequency_tree(np.arange(500), 8, leaf_cluster_size=4, tokenizer_fingerprint="bpe:abc")
    loaded = load_tree(
        save_tree(tree, tmp_path / "t.npz"), vocab_size=500, tokenizer_fingerprint="bpe:abc"
    )
    assert loaded.params == {"requested_branching": 8, "leaf_cluster_size": 4}
    assert (loaded.method, loaded.tokenizer_fingerprint) == ("frequency", "bpe:abc")


# --- corrupt and inconsistent files ------------------------------------------------------------


def _arrays(tree):
    path_arrays = {}
    offsets = tree.level_offsets
    parent = np.full(tree.num_nodes, -1)
    slot = np.zeros(tree.num_nodes, dtype=np.int64)
    for h in range(tree.depth):
        parent[offsets[h] : offsets[h + 1]] = tree.parents[h] + offsets[h + 1]
        slot[offsets[h] : offsets[h + 1]] = tree.slots[h]
    meta = {
        "format": "tdlm-tree",
        "format_version": 1,
        "vocab_size": tree.vocab_size,
        "level_sizes": list(tree.level_sizes),
        "branching": list(tree.branching),
        "num_nodes": tree.num_nodes,
        "method": "random",
        "seed": 0,
        "tokenizer_fingerprint": None,
        "params": {},
    }
    path_arrays.update(level_sizes=np.array(tree.level_sizes), parent=parent, slot=slot)
    return path_arrays, meta


def _write(path, arrays, meta):
    raw = (
        np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8) if isinstance(meta, dict) else meta
    )
    np.savez(path, **arrays, metadata=raw)
    return path


@pytest.fixture
def good(tmp_path):
    tree = random_tree(40, 4, seed=3)  # level sizes 40, 10, 3, 1
    return tmp_path, *_arrays(tree)


def test_the_helper_writes_a_loadable_file(good):
    tmp_path, arrays, meta = good
    assert load_tree(_write(tmp_path / "ok.npz", arrays, meta)).vocab_size == 40


def test_truncated_file(good, tmp_path):
    path = save_tree(random_tree(40, 4), tmp_path / "t.npz")
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(TreeError, match="cut.npz"):
            load_tree(tmp_path / "cut.npz")


def test_missing_file_and_not_an_archive(tmp_path):
    with pytest.raises(TreeError, match="no such tree file"):
        load_tree(tmp_path / "absent.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(TreeError, match="not a readable"):
        load_tree(tmp_path / "text.npz")


def test_wrong_dtype(good):
    tmp_path, arrays, meta = good
    arrays["parent"] = arrays["parent"].astype(np.float64)
    with pytest.raises(TreeError, match="'parent' must be a 1-D integer array"):
        load_tree(_write(tmp_path / "f.npz", arrays, meta))


def test_pickled_object_array_is_never_unpickled(good):
    tmp_path, arrays, meta = good
    arrays["slot"] = np.array([object()] * len(arrays["slot"]), dtype=object)
    with pytest.raises(TreeError, match="not a readable"):
        load_tree(_write(tmp_path / "p.npz", arrays, meta))


def test_out_of_range_parent(good):
    tmp_path, arrays, meta = good
    arrays["parent"][5] = 10**6
    with pytest.raises(TreeError, match="node 5 .* not a level-1 node"):
        load_tree(_write(tmp_path / "r.npz", arrays, meta))


def test_cycle_and_self_loop(good):
    tmp_path, arrays, meta = good
    cyclic = dict(arrays, parent=arrays["parent"].copy())
    a, b = 40, 41  # two level-1 nodes made each other's parent
    cyclic["parent"][a], cyclic["parent"][b] = b, a
    with pytest.raises(TreeError, match="cycle"):
        load_tree(_write(tmp_path / "c.npz", cyclic, meta))
    loop = dict(arrays, parent=arrays["parent"].copy())
    loop["parent"][3] = 3
    with pytest.raises(TreeError, match="cycle"):
        load_tree(_write(tmp_path / "l.npz", loop, meta))


def test_duplicate_and_out_of_range_slot(good):
    tmp_path, arrays, meta = good
    siblings = np.flatnonzero(arrays["parent"][:40] == arrays["parent"][0])
    dup = dict(arrays, slot=arrays["slot"].copy())
    dup["slot"][siblings[1]] = dup["slot"][siblings[0]]
    with pytest.raises(TreeError, match="share a slot|slots must be"):
        load_tree(_write(tmp_path / "d.npz", dup, meta))
    big = dict(arrays, slot=arrays["slot"].copy())
    big["slot"][0] = 99
    with pytest.raises(TreeError, match="slot 99"):
        load_tree(_write(tmp_path / "b.npz", big, meta))


def test_size_mismatches(good):
    tmp_path, arrays, meta = good
    path = _write(tmp_path / "ok.npz", arrays, meta)
    with pytest.raises(TreeError, match="40 leaves but the vocabulary has 41"):
        load_tree(path, vocab_size=41)
    short = dict(arrays, parent=arrays["parent"][:-1])
    with pytest.raises(TreeError, match="parents"):
        load_tree(_write(tmp_path / "s.npz", short, meta))
    sizes = dict(arrays, level_sizes=np.array([40, 10, 3, 2]))
    with pytest.raises(TreeError, match="ending in 1"):
        load_tree(_write(tmp_path / "z.npz", sizes, meta))
    with pytest.raises(TreeError, match="metadata says N=41"):
        load_tree(_write(tmp_path / "m.npz", arrays, dict(meta, vocab_size=41)))


def test_orphan_node(good):
    tmp_path, arrays, meta = good
    orphan = dict(arrays, parent=arrays["parent"].copy(), slot=arrays["slot"].copy())
    children_of_40 = np.flatnonzero(orphan["parent"] == 40)
    orphan["parent"][children_of_40] = 41  # level-1 node 40 loses all children
    with pytest.raises(TreeError, match="no children|slot"):
        load_tree(_write(tmp_path / "o.npz", orphan, meta))


def test_bad_metadata(good):
    tmp_path, arrays, meta = good
    with pytest.raises(TreeError, match="not valid JSON"):
        load_tree(_write(tmp_path / "j.npz", arrays, np.frombuffer(b"{nope", dtype=np.uint8)))
    with pytest.raises(TreeError, match="format version 2"):
        load_tree(_write(tmp_path / "v.npz", arrays, dict(meta, format_version=2)))
    with pytest.raises(TreeError, match="does not describe"):
        load_tree(_write(tmp_path / "n.npz", arrays, dict(meta, format="other")))
    np.savez(tmp_path / "k.npz", **arrays)
    with pytest.raises(TreeError, match="missing arrays"):
        load_tree(tmp_path / "k.npz")


def test_tokenizer_mismatch(tmp_path):
    path = save_tree(random_tree(30, 4, tokenizer_fingerprint="bpe:1"), tmp_path / "t.npz")
    with pytest.raises(TreeError, match="built for tokenizer 'bpe:1'"):
        load_tree(path, tokenizer_fingerprint="bpe:2")


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_tree(random_tree(30, 4), tmp_path / "t.npz")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_tree(random_tree(50, 4), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["t.npz"]
    assert zipfile.is_zipfile(path)
