"""Command-line entry points of the apps: ``train``, ``eval`` and ``sample``.

Options are the run config's fields as ``--section.key value`` (``--help`` lists them all with
their defaults and meanings), plus a few app flags. Any :class:`UserError` — bad flags, missing
or corrupt files, incompatible checkpoints, a diverged loss — prints one ``error:`` line and
exits with status 2; nothing already written is overwritten.
"""

import logging
import sys
from collections.abc import Callable, Sequence

from .errors import UserError
from .overrides import apply_overrides, field_help

__all__ = ["train_main", "parse_options", "run_app"]


def parse_options(argv: Sequence[str], flags: set[str], switches: set[str]):
    """Split argv into app ``flags`` (value-taking), ``switches`` and ``--a.b value`` overrides."""
    values: dict[str, str] = {}
    on: set[str] = set()
    overrides: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            raise UserError(f"unexpected argument {arg!r}; options look like --name value")
        name, eq, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        if name in switches and not eq:
            on.add(name)
            continue
        if not eq:
            if not args:
                raise UserError(f"--{name} needs a value")
            value = args.pop(0)
        (values if name in flags else overrides)[name] = value
    return values, on, overrides


def help_text(usage: str, flags: dict[str, str], switches: dict[str, str], config) -> str:
    lines = [usage, "", "app options:"]
    for name, meaning in {**flags, **switches}.items():
        lines.append(f"  --{name:<28} {meaning}")
    lines += ["", "run options (--section.key value; default in brackets):"]
    for flag, default, meaning in field_help(config):
        lines.append(f"  {flag:<30} {meaning} [{default}]")
    return "\n".join(lines)


def run_app(body: Callable[[], int]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return body()
    except UserError as error:
        for line in str(error).splitlines() or [""]:  # one line per problem
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint written is intact", file=sys.stderr)
        return 130


TRAIN_FLAGS = {
    "preset": "run preset: tiny (CPU, standard-library corpus) | owt-small (GPU, OpenWebText)",
    "model": "tdlm (default) or mdlm: shorthand for --model.kind",
}
TRAIN_SWITCHES = {"resume": "continue the run in --run_dir from its latest checkpoint"}


def train_main(argv: Sequence[str]) -> int:
    from .config import preset

    def body() -> int:
        if "-h" in argv or "--help" in argv:
            print(
                help_text(
                    "usage: apps/train [--preset NAME] [--model tdlm|mdlm] [--resume] "
                    "[--section.key value ...]",
                    TRAIN_FLAGS,
                    TRAIN_SWITCHES,
                    preset("tiny"),
                )
            )
            return 0
        values, on, overrides = parse_options(argv, set(TRAIN_FLAGS), set(TRAIN_SWITCHES))
        config = preset(values.get("preset", "tiny"))
        if "model" in values:
            overrides["model.kind"] = values["model"]
        config = apply_overrides(config, overrides)
        from .trainer import train

        result = train(config, resume="resume" in on)
        if result.summary:
            print("\n" + result.summary)
            if result.samples:
                print("\nsample:\n" + result.samples[0])
        return 0

    return run_app(body)


EVAL_FLAGS = {
    "checkpoint": "a checkpoint folder, or a run folder (its latest checkpoint) [required]",
    "split": "val (default) or train: which split of the corpus to score",
    "batches": "batches of --batch_size blocks to score (default: all of the split, at most 64)",
    "samples_per_level": "noise draws per level per block (default 4)",
    "out": "also write the figures as JSON to this file",
    "gen_ppl_model": "also sample 8 sequences and score them with this transformers causal LM "
    "(a hub name such as gpt2-large, online only, or a local folder)",
}
EVAL_SWITCHES = {"raw_weights": "score the raw weights instead of the EMA weights"}


def eval_main(argv: Sequence[str]) -> int:
    """NELBO per level, perplexity and bits per byte of a checkpoint on any corpus."""

    def body() -> int:
        import dataclasses
        from pathlib import Path

        from .atomic import write_json
        from .config import RunConfig
        from .data import prepare_data
        from .evaluate import validate
        from .inference import load_trained
        from .packing import PackedBlocks
        from .runtime import pick_device
        from .tokenizer import TokenizerConfig

        if "-h" in argv or "--help" in argv:
            print(
                help_text(
                    "usage: apps/eval --checkpoint DIR [--data.source ...] "
                    "[--seq_len L] [--batch_size B]",
                    EVAL_FLAGS,
                    EVAL_SWITCHES,
                    RunConfig(),
                )
            )
            return 0
        values, on, overrides = parse_options(argv, set(EVAL_FLAGS), set(EVAL_SWITCHES))
        if "checkpoint" not in values:
            raise UserError("--checkpoint DIR is required")
        fixed = sorted(k for k in overrides if k.split(".")[0] in ("model", "tree", "tokenizer"))
        if fixed:
            raise UserError(
                f"the checkpoint fixes the model, tree and tokenizer: "
                f"{', '.join('--' + k for k in fixed)} cannot change them"
            )
        if "out" in values:  # before scoring, not after it
            try:
                Path(values["out"]).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(f"--out {values['out']}: {error.strerror}") from None
        device = pick_device(overrides.pop("device", "auto"))
        loaded = load_trained(values["checkpoint"], device, ema="raw_weights" not in on)
        config = apply_overrides(loaded.files.config, overrides)
        tokenizer_file = Path(loaded.checkpoint).parent.parent / "tokenizer.json"
        data = prepare_data(
            config.data, TokenizerConfig(name=str(tokenizer_file)), Path(config.cache_dir)
        )
        split = values.get("split", "val")
        if split not in ("val", "train"):
            raise UserError(f"--split must be val or train, got {split!r}")
        stream = data.val_tokens if split == "val" else data.train_tokens
        blocks = PackedBlocks(stream, config.seq_len, data.tokenizer.bos_id, data.tokenizer.eos_id)
        if len(blocks) == 0:
            raise UserError(f"the {split} split has fewer than {config.seq_len} tokens")
        batches = int(values.get("batches", 0)) or min(64, -(-len(blocks) // config.batch_size))
        result = validate(
            loaded.process,
            loaded.model,
            blocks,
            batches=batches,
            batch_size=config.batch_size,
            samples_per_level=int(values.get("samples_per_level", 4)),
            token_bytes=data.token_bytes,
            device=device,
            seed=config.seed,
        )
        weights = "raw weights" if "raw_weights" in on else "EMA weights"
        print(
            f"checkpoint {loaded.checkpoint} (step {loaded.step}, {weights}), "
            f"{config.data.source} {split}: {result.tokens:,} tokens, {result.text_bytes:,} bytes"
        )
        print(f"  NELBO  {result.nelbo:.4f} nats/token")
        for h, value in enumerate(result.level_nelbo):
            print(f"    L_{h}  {value:.4f}")
        print(f"  PPL    {result.perplexity:.3f} (upper bound)")
        print(f"  BPB    {result.bits_per_byte:.4f}")
        figures = dataclasses.asdict(result) | {"weights": weights}
        if "gen_ppl_model" in values:
            from .evaluate import sample_texts
            from .genppl import generative_perplexity

            texts, _ = sample_texts(
                loaded.process,
                loaded.model,
                data.tokenizer,
                count=8,
                length=config.seq_len,
                config=config.diffusion.sampler(loaded.files.tree.depth),
                device=device,
                seed=config.seed,
            )
            scored = generative_perplexity(texts, values["gen_ppl_model"], device=device)
            print(f"  gen PPL {scored.perplexity:.2f} ({scored.model}, {scored.tokens} tokens)")
            figures["gen_ppl"] = dataclasses.asdict(scored)
        if "out" in values:
            write_json(Path(values["out"]), figures)
        return 0

    return run_app(body)


SAMPLE_FLAGS = {
    "checkpoint": "a checkpoint folder, or a run folder (its latest checkpoint) [required]",
    "steps": "sampler steps over all levels, at least one per level (default 64)",
    "temperature": "temperature on child distributions; 0 = greedy (default 1.0)",
    "top_p": "nucleus sampling on child distributions (default 1.0)",
    "count": "sequences to sample (default 4)",
    "length": "tokens per sequence (default: the training sequence length)",
    "seed": "sampling seed (default 0)",
    "device": "auto (default) | cpu | cuda",
}
SAMPLE_SWITCHES = {"show_levels": "print each sequence at every level, coarse to fine"}


def sample_main(argv: Sequence[str]) -> int:
    """Ancestral sampling from a checkpoint, optionally showing the coarse-to-fine trajectory."""

    def body() -> int:
        import numpy as np
        import torch

        from tdlm_diffusion import SamplerConfig, ancestral_sample

        from .inference import load_trained, node_representatives, render_nodes
        from .runtime import pick_device

        if "-h" in argv or "--help" in argv:
            print("usage: apps/sample --checkpoint DIR [options]\n")
            for name, meaning in {**SAMPLE_FLAGS, **SAMPLE_SWITCHES}.items():
                print(f"  --{name:<14} {meaning}")
            return 0
        values, on, overrides = parse_options(argv, set(SAMPLE_FLAGS), set(SAMPLE_SWITCHES))
        if overrides:
            raise UserError(f"unknown options {sorted(overrides)} (see --help)")
        if "checkpoint" not in values:
            raise UserError("--checkpoint DIR is required")
        try:
            steps = int(values.get("steps", 64))
            count = int(values.get("count", 4))
            seed = int(values.get("seed", 0))
            temperature = float(values.get("temperature", 1.0))
            top_p = float(values.get("top_p", 1.0))
        except ValueError as error:
            raise UserError(f"a sampling option is not a number ({error})") from None
        try:
            length = int(values["length"]) if "length" in values else None
        except ValueError as error:
            raise UserError(f"--length is not a number ({error})") from None
        small = [f"--{k} {v}" for k, v in (("count", count), ("steps", steps)) if v < 1]
        small += [f"--length {length}"] if length is not None and length < 1 else []
        if small:
            raise UserError(f"must be >= 1: {', '.join(small)}")
        device = pick_device(values.get("device", "auto"))
        loaded = load_trained(values["checkpoint"], device)
        tree = loaded.files.tree
        length = length or loaded.files.config.seq_len
        show = "show_levels" in on
        if steps < tree.depth:
            print(f"--steps {steps}: raised to {tree.depth}, one step per tree level")
        try:
            config = SamplerConfig(
                steps=max(steps, tree.depth),
                temperature=temperature,
                top_p=top_p,
                keep_trajectory=show,
            )
        except ValueError as error:
            raise UserError(str(error)) from None
        generator = torch.Generator(device).manual_seed(seed)
        result = ancestral_sample(
            loaded.process,
            loaded.model,
            batch_size=count,
            length=length,
            config=config,
            generator=generator,
        )
        print(
            f"{count} samples of {length} tokens, {config.steps} steps "
            f"({result.network_calls} network calls), checkpoint step {loaded.step}"
        )
        reps = node_representatives(loaded.files) if show else None
        for i, row in enumerate(result.tokens.cpu().numpy()):
            print(f"\n=== sample {i}")
            if show:
                boundaries = np.cumsum((0, *reversed(result.steps_per_level)))
                for h, j in zip(range(tree.depth, -1, -1), boundaries, strict=True):
                    nodes = result.trajectory[j, i].cpu().numpy()
                    print(f"--- level {h}:")
                    print(render_nodes(nodes, loaded.files, reps))
            else:
                print(loaded.files.tokenizer.decode(row.tolist()))
        return 0

    return run_app(body)
