"""Sampling from a trained run for people to read (``apps/sample``), unconditionally or around
given text (a prompt, gaps to fill): decoded sequences, or each sequence at every level of the
tree, coarse to fine, with positions still at an internal node
shown as that node's most frequent token (``⟨tok⟩``; ``⟨·⟩`` for the root); and decoded samples
for the training log and generative perplexity (:func:`sample_texts`). An autoregressive run
(``--kind ar``) samples left to right instead (:mod:`.autoregressive`).
"""

import numpy as np
import torch

from tdlm_diffusion import Context, SamplerConfig, SampleResult, TreeProcess, ancestral_sample

from .autoregressive import autoregressive_sample, is_causal
from .context import Layout
from .errors import UserError
from .run import Run
from .tokenizer import TextTokenizer

__all__ = ["sample_report", "sample_texts", "node_representatives", "render_nodes"]


def sample_report(
    run: Run,
    *,
    count: int,
    length: int,
    sampler: SamplerConfig,
    seed: int = 0,
    layout: Layout | None = None,
    mode: str = "projection",
) -> str:
    """``count`` ancestral samples of ``length`` tokens as text (every level's state too when
    ``sampler.keep_trajectory``); with a ``layout`` (a prompt or gaps to fill) its known
    positions are kept and shown to the network as ``mode`` says (docs/method.md §8)."""
    generator = torch.Generator(run.device).manual_seed(seed)
    length = length if layout is None else len(layout.tokens)
    if run.config.kind == "ar":
        result = _autoregressive_report(run, count, length, sampler, generator, layout)
    else:
        context = None
        if layout is not None:
            known = torch.from_numpy(layout.known).to(run.device).expand(count, -1)
            tokens = torch.from_numpy(layout.tokens).to(run.device).expand(count, -1)
            context = Context(known.contiguous(), tokens.contiguous(), mode=mode)
        result = ancestral_sample(
            run.process, run.model, batch_size=count, length=length, config=sampler,
            generator=generator, context=context,
        )  # fmt: skip
    given = "" if layout is None else f", {int(layout.known.sum())} known ({mode})"
    lines = [
        f"{count} samples of {length} tokens{given}, {sum(result.steps_per_level)} steps "
        f"({result.network_calls} network calls), checkpoint step {run.state.step}"
    ]
    reps = node_representatives(run) if sampler.keep_trajectory else None
    for i, row in enumerate(result.tokens.cpu().numpy()):
        lines.append(f"\n=== sample {i}")
        if reps is None:
            lines.append(run.tokenizer.decode(row.tolist()))
            continue
        boundaries = np.cumsum((0, *reversed(result.steps_per_level)))
        for h, j in zip(range(run.tree.depth, -1, -1), boundaries, strict=True):
            lines.append(f"--- level {h}:")
            lines.append(render_nodes(result.trajectory[j, i].cpu().numpy(), run, reps))
    return "\n".join(lines)


def _autoregressive_report(
    run: Run,
    count: int,
    length: int,
    sampler: SamplerConfig,
    generator: torch.Generator,
    layout: Layout | None,
) -> SampleResult:
    """The AR baseline continues BOS, or a prompt (the layout's leading known run; its closing
    EOS is not forced: the model writes until ``length``)."""
    if sampler.keep_trajectory:
        raise UserError("--show-levels shows a tree's levels; an autoregressive model has none")
    prefix = np.array([run.tokenizer.bos_id])
    if layout is not None:
        lead = int(np.argmin(layout.known)) if not layout.known.all() else length
        if layout.known[lead:-1].any():
            raise UserError(
                "an autoregressive model continues a prompt left to right; it cannot fill gaps "
                "(--infill needs a diffusion model)"
            )
        prefix = layout.tokens[:lead]
    start = torch.from_numpy(prefix).to(run.device).expand(count, -1).contiguous()
    tokens = autoregressive_sample(run.process, run.model, start, length, config=sampler,
                                   generator=generator)
    return SampleResult(tokens, length - len(prefix), (length - len(prefix),), None)


def node_representatives(run: Run) -> np.ndarray:
    """For every global node id, its most frequent leaf token (how an unfinished position reads)."""
    tree, counts = run.tree, run.counts
    reps = np.empty(tree.num_nodes, dtype=np.int64)
    reps[: tree.vocab_size] = np.arange(tree.vocab_size)
    for h in range(1, tree.depth + 1):
        # argmax of counts within each level-h subtree: sort leaves by count, keep the last per node
        ancestor = tree.ancestors[:, h]
        order = np.lexsort((counts, ancestor))
        last = np.r_[np.flatnonzero(np.diff(ancestor[order])), len(order) - 1]
        reps[tree.level_offsets[h] + ancestor[order][last]] = order[last]
    return reps


def render_nodes(nodes: np.ndarray, run: Run, reps: np.ndarray) -> str:
    """Tokens as text; positions still at internal nodes as ``⟨rep⟩`` (``⟨·⟩`` for the root)."""
    vocab = run.tree.vocab_size
    root = run.tree.num_nodes - 1
    pieces = []
    for node in nodes.tolist():
        if node < vocab:
            pieces.append(run.tokenizer.decode([node]))
        elif node == root:
            pieces.append("⟨·⟩")
        else:
            text = run.tokenizer.decode([int(reps[node])])
            pieces.append("⟨" + text.replace(" ", "␣").replace("\n", "↵") + "⟩")
    return "".join(pieces)


@torch.no_grad()
def sample_texts(
    process: TreeProcess,
    model: torch.nn.Module,
    tokenizer: TextTokenizer,
    *,
    count: int,
    length: int,
    config: SamplerConfig,
    device: torch.device,
    seed: int = 0,
):
    """``(texts, result)``: decoded samples and the sampler's result (calls, trajectory)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device).manual_seed(seed)
    if is_causal(model):  # the autoregressive baseline: left to right from BOS
        bos = torch.full((count, 1), tokenizer.bos_id, dtype=torch.long, device=device)
        tokens = autoregressive_sample(process, model, bos, length, config=config,
                                       generator=generator)
        result = SampleResult(tokens, length - 1, (length - 1,), None)  # a call per token
    else:
        result = ancestral_sample(
            process, model, batch_size=count, length=length, config=config, generator=generator
        )
    model.train(was_training)
    texts = [tokenizer.decode(row.tolist()) for row in result.tokens.cpu()]
    return texts, result
