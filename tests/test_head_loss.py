"""Every head loss gives the plain loss and gradients (docs/method.md, "Scoring only the masked
positions"): the masked positions' logits only, chunked, and torch's fused linear cross-entropy.

The reference is ``head_loss="full"``: every position's logits through the denoiser protocol,
the loss the library has always computed. The others see the same draw (same generator) and
differ only in which rows are computed and in what order they are summed, so in fp32 they agree
to a relative 1e-5 (float32's eps is 1.2e-7; a few hundred terms per sum, a few matmuls deep).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import tdlm_diffusion.head_loss as head_loss_module
from tdlm_diffusion import (
    ESTIMATORS,
    HEAD_LOSSES,
    Context,
    DiffusionInputError,
    TreeProcess,
    check_head_loss,
    head_loss_unavailable,
    noised_batch,
    training_loss,
)
from tdlm_nn import DiTConfig, TreeShape
from tdlm_tree import VocabTree, flat_tree, random_tree

HAS_TORCH_FUSED = hasattr(F, "linear_cross_entropy")
# Exact on any tree; the fused ones on trees whose nodes all have k children.
ANY_TREE = ("masked",)
FULL_WIDTH = ("chunked", "torch") if HAS_TORCH_FUSED else ("chunked",)
TOLERANCE = 1e-5


def _uneven_tree(seed: int, n: int) -> VocabTree:
    """Some nodes with one child, others with many: invalid slots everywhere."""
    rng = np.random.default_rng(seed)
    sizes = [n]
    while sizes[-1] > 1:
        sizes.append(int(rng.integers(1, sizes[-1])))
    parents = []
    for size, up in zip(sizes[:-1], sizes[1:], strict=True):
        parent = np.concatenate([np.arange(up), rng.integers(0, up, size - up)])
        parents.append(rng.permutation(parent))
    return VocabTree(parents)


TREES = {
    "flat": lambda seed: flat_tree(40 + seed % 7),
    "balanced": lambda seed: random_tree(64, 4, seed=seed),  # 4-ary, 64 leaves: full width
    "random": lambda seed: random_tree(45 + seed % 11, 5, seed=seed),
    "uneven": lambda seed: _uneven_tree(seed, 30 + seed % 9),
}


def _model(tree: VocabTree, seed: int, **overrides):
    torch.manual_seed(seed)
    values = dict(shape=TreeShape.of(tree), width=32, n_heads=4, n_blocks=2, cond_dim=16,
                  dropout=0.0)
    model = DiTConfig(**(values | overrides)).build()
    with torch.no_grad():  # the head is zero-initialised: randomise everything
        for parameter in model.parameters():
            parameter.normal_(0, 0.3)
    return model


def _loss_and_grads(process, model, x, head_loss, seed, **kwargs):
    model.zero_grad()
    result = training_loss(
        process, model, x, head_loss=head_loss,
        generator=torch.Generator().manual_seed(seed), **kwargs,
    )  # fmt: skip
    result.loss.backward()
    return result, {name: p.grad.clone() for name, p in model.named_parameters()}


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.double().norm().clamp(min=1e-12)
    return ((actual.double() - expected.double()).norm() / scale).item()


def _assert_same(process, model, x, head_loss, seed, **kwargs):
    plain, plain_grads = _loss_and_grads(process, model, x, "full", seed, **kwargs)
    other, other_grads = _loss_and_grads(process, model, x, head_loss, seed, **kwargs)
    torch.testing.assert_close(other.level, plain.level, rtol=0, atol=0)
    assert _relative_error(other.per_sequence, plain.per_sequence) <= TOLERANCE
    assert _relative_error(other.loss, plain.loss) <= TOLERANCE
    for name, grad in plain_grads.items():
        assert _relative_error(other_grads[name], grad) <= TOLERANCE, name


@given(
    tree=st.sampled_from(sorted(TREES)),
    seed=st.integers(0, 10_000),
    estimator=st.sampled_from(ESTIMATORS),
    time=st.booleans(),
    shared=st.booleans(),
)
def test_masked_head_loss_is_the_plain_loss_on_any_tree(tree, seed, estimator, time, shared):
    if time and estimator in ("count", "harmonic"):
        time = False  # the count forms need a network that does not see s
    vocab = TREES[tree](seed)
    model = _model(vocab, seed, time_conditioning=time, shared_head=shared)
    process = TreeProcess(vocab, pass_time=time)
    x = torch.randint(0, vocab.vocab_size, (5, 11), generator=torch.Generator().manual_seed(seed))
    _assert_same(process, model, x, "masked", seed, estimator=estimator,
                 level_weights=[1.0 + h for h in range(process.depth)])


@pytest.mark.parametrize("head_loss", FULL_WIDTH)
@pytest.mark.parametrize("tree", ["flat", "balanced"])
@pytest.mark.parametrize("chunk_logits", [7, 64, 2**24])
def test_fused_head_losses_are_the_plain_loss(monkeypatch, head_loss, tree, chunk_logits):
    # Chunks of 7 logits hold 0-1 rows (at least one), of 64 a few, of 2^24 all of them.
    monkeypatch.setattr(head_loss_module, "CHUNK_LOGITS", chunk_logits)
    for seed in range(3):
        vocab = TREES[tree](seed)
        process = TreeProcess(vocab)
        assert process.full_width
        model = _model(vocab, seed)
        x = torch.randint(0, vocab.vocab_size, (6, 13),
                          generator=torch.Generator().manual_seed(seed))
        _assert_same(process, model, x, head_loss, seed, estimator="cutoff")


@pytest.mark.parametrize("head_loss", ANY_TREE + FULL_WIDTH)
def test_head_losses_score_only_unknown_positions_under_a_context(head_loss):
    vocab = flat_tree(37)
    process = TreeProcess(vocab)
    model = _model(vocab, 3)
    x = torch.randint(0, 37, (4, 12), generator=torch.Generator().manual_seed(3))
    known = torch.zeros_like(x, dtype=torch.bool)
    known[:, :5] = True
    for mode in ("clean", "projection"):
        context = Context(known=known, tokens=x, mode=mode)
        _assert_same(process, model, x, head_loss, 3, estimator="count", context=context)


def test_nothing_masked_gives_zero_loss_and_zero_gradients():
    vocab = random_tree(30, 4, seed=0)
    process = TreeProcess(vocab)
    model = _model(vocab, 0)
    x = torch.randint(0, 30, (3, 8), generator=torch.Generator().manual_seed(0))
    context = Context(known=torch.ones_like(x, dtype=torch.bool), tokens=x, mode="clean")
    result = training_loss(process, model, x, head_loss="masked", context=context,
                           estimator="count")
    result.loss.backward()
    assert float(result.loss.detach()) == 0.0
    assert all(not p.grad.any() for p in model.parameters())


class _SavedLogits:
    """Records the largest logits-shaped tensor (last dimension ``width``, not a view of a
    parameter such as the head's transposed weight) autograd keeps for the backward pass."""

    largest = 0

    def __init__(self, width: int, model: torch.nn.Module) -> None:
        self.width = width
        self.weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def __enter__(self):
        def pack(tensor):
            weight = tensor.untyped_storage().data_ptr() in self.weights
            if tensor.ndim >= 2 and tensor.shape[-1] == self.width and not weight:
                self.largest = max(self.largest, tensor.numel())
            return tensor

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def test_only_the_full_head_loss_keeps_every_positions_logits(monkeypatch):
    monkeypatch.setattr(head_loss_module, "CHUNK_LOGITS", 4 * 300)
    vocab = flat_tree(300)
    process = TreeProcess(vocab)
    model = _model(vocab, 0)
    x = torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(0))
    draw = noised_batch(process, x, generator=torch.Generator().manual_seed(1))
    masked_rows = int(process.is_masked(draw.z, draw.level).sum())
    largest = {}
    for head_loss in ("full", "masked", *FULL_WIDTH):
        with _SavedLogits(300, model) as saved:
            training_loss(process, model, x, head_loss=head_loss,
                          generator=torch.Generator().manual_seed(1))
        largest[head_loss] = saved.largest
    assert largest["full"] >= x.numel() * 300  # every position's logits
    assert largest["masked"] == masked_rows * 300 < x.numel() * 300
    assert largest["chunked"] <= 4 * 300  # one chunk's logits
    if HAS_TORCH_FUSED:
        assert largest["torch"] < masked_rows * 300


def test_bad_head_losses_are_refused_in_one_sentence():
    uneven = TreeProcess(_uneven_tree(0, 20))
    with pytest.raises(DiffusionInputError, match="unknown head loss 'fast'"):
        check_head_loss("fast", uneven)
    for fused in ("chunked", "torch", "liger", "cce"):
        with pytest.raises(DiffusionInputError, match="fewer children; use 'masked'"):
            check_head_loss(fused, uneven)
    flat = TreeProcess(flat_tree(20))
    for kernel in ("liger", "cce"):
        reason = head_loss_unavailable(kernel, "cpu")
        assert reason is not None and ("CUDA" in reason or "pip install" in reason)
        with pytest.raises(DiffusionInputError):
            check_head_loss(kernel, flat, "cpu")
    assert set(HEAD_LOSSES) == {"full", "masked", "chunked", "torch", "liger", "cce"}


def test_torch_head_loss_names_the_torch_it_needs(monkeypatch):
    monkeypatch.delattr(F, "linear_cross_entropy", raising=False)
    reason = head_loss_unavailable("torch")
    assert reason is not None and "torch >= 2.13" in reason and "'chunked'" in reason
