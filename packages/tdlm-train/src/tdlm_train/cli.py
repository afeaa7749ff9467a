"""Command-line entry points of the apps: ``train``, ``eval``, ``sample`` and ``export``.

Options are the run config's fields as ``--section.key value`` (``--help`` lists them all with
their defaults and meanings), plus a few app flags. Any :class:`UserError` — bad flags, missing
or corrupt files, incompatible checkpoints, a diverged loss — prints one ``error:`` line and
exits with status 2; nothing already written is overwritten. Ctrl-C stops any app within about
a second (:func:`prompt_stop`), status 130.
"""

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

from .errors import UserError
from .overrides import apply_overrides, field_help

__all__ = [
    "train_main",
    "eval_main",
    "sample_main",
    "export_main",
    "parse_options",
    "run_app",
    "prompt_stop",
]


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
    rows = field_help(config)
    width = max(len(flag) for flag, _, _ in rows) + 2
    lines = [usage, "", "app options:"]
    for name, meaning in {**flags, **switches}.items():
        lines.append(f"  {'--' + name:<{width}}{meaning}")
    lines += ["", "run options (--section.key value; default in brackets):"]
    for flag, default, meaning in rows:
        lines.append(f"  {flag:<{width}}{meaning} [{default}]")
    return "\n".join(lines)


# How long the app may take to unwind after Ctrl-C (its own message, closing files) before the
# watchdog ends the process.
STOP_GRACE_SECONDS = 1.0
INTERRUPTED = "interrupted; the last checkpoint written is intact"


@contextlib.contextmanager
def prompt_stop(
    message: str = INTERRUPTED, grace: float = STOP_GRACE_SECONDS
) -> Iterator[None]:
    """Within this block Ctrl-C ends the process within ``grace`` seconds, however long the
    native call the main thread is in (an attention over 10^5 positions, a tokenizer run).

    Python runs its SIGINT handler (which raises KeyboardInterrupt) only between bytecodes, so
    a long C call delays it indefinitely. The C-level handler does write the signal number to
    the wakeup fd at once: a watchdog thread reading it gives the main thread ``grace``
    seconds to unwind, then exits with status 130. Whatever was being written then is a marked
    temporary (:mod:`.atomic`) that the next run removes. Outside the main thread (tests
    calling the apps from threads), nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    done = threading.Event()

    def watch() -> None:
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGINT in data and not done.wait(grace):
                print(message, file=sys.stderr, flush=True)
                os._exit(130)

    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="tdlm-prompt-stop", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(previous)
        writer.close()
        reader.close()


def run_app(body: Callable[[], int]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with prompt_stop():
        return _run(body)


def _run(body: Callable[[], int]) -> int:
    try:
        return body()
    except UserError as error:
        for line in str(error).splitlines() or [""]:  # one line per problem
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


def wants_help(argv: Sequence[str]) -> bool:
    return "-h" in argv or "--help" in argv


def typed_options(values: dict[str, str], spec: dict[str, tuple[type, object]]) -> dict:
    """``values`` converted by ``spec`` (``name: (type, default)``); whole numbers must be >= 1,
    or >= 0 where the default is 0. Every bad value is named, one line each."""
    out, errors = {}, []
    for name, (kind, default) in spec.items():
        if name not in values:
            out[name] = default
            continue
        try:
            out[name] = kind(values[name])
        except ValueError:
            errors.append(f"--{name} expects {kind.__name__}, got {values[name]!r}")
            continue
        low = 0 if default == 0 else 1
        if kind is int and out[name] < low:
            errors.append(f"--{name} must be >= {low}, got {out[name]}")
    if errors:
        raise UserError("\n".join(errors))
    return out


TRAIN_FLAGS = {
    "preset": "run preset: tiny (CPU, standard-library corpus) | owt-small (GPU, OpenWebText)",
    "model": "tdlm (default), mdlm or ar (autoregressive): shorthand for --kind",
}
TRAIN_SWITCHES = {
    "resume": "continue the run in --run_dir from its latest checkpoint",
    "adopt_run_dir": "train in a non-empty --run_dir TDLM did not make, beside its files (none "
    "may bear a name a run writes; docs/architecture.md)",
    "allow_changed_data": "with --resume: continue on a corpus that changed since the "
    "checkpoint, tokenized with the run's own tokenizer and tree",
}


def train_main(argv: Sequence[str]) -> int:
    """Parse -> RunConfig -> train (a Run and its Trainer) -> the summary."""
    from .config import preset

    def body() -> int:
        if wants_help(argv):
            usage = (
                "usage: apps/train [--preset NAME] [--model tdlm|mdlm|ar] [--resume] "
                "[--section.key value ...]"
            )
            print(help_text(usage, TRAIN_FLAGS, TRAIN_SWITCHES, preset("tiny")))
            return 0
        values, on, overrides = parse_options(argv, set(TRAIN_FLAGS), set(TRAIN_SWITCHES))
        if "model" in values:
            overrides["kind"] = values["model"]
        config = apply_overrides(preset(values.get("preset", "tiny")), overrides)
        from .train import train

        if "allow_changed_data" in on and "resume" not in on:
            raise UserError("--allow_changed_data applies to --resume only")
        result = train(
            config,
            resume="resume" in on,
            adopt="adopt_run_dir" in on,
            allow_changed_data="allow_changed_data" in on,
        )
        if result.summary:
            print("\n" + result.summary)
            if result.samples:
                print("\nsample:\n" + result.samples[0])
        return 0

    return run_app(body)


EVAL_FLAGS = {
    "checkpoint": "a checkpoint folder, a run folder (its latest checkpoint), an apps/export "
    "folder, or its hub id owner/name[@revision] [required]",
    "split": "val (default) or train: which split of the corpus to score",
    "batches": "batches of --batch_size blocks to score (default: all of the split, at most "
    "64; with --suite: every block of each set)",
    "samples_per_level": "noise draws per level per block (default 4)",
    "out": "also write the figures as JSON to this file",
    "condition": "prefix:F — score each block's tokens after its first F given them (and "
    "without them, prefix hidden, to compare)",
    "context": "with --condition: projection (any checkpoint) | clean (runs trained with "
    "--condition.probability > 0; their default)",
    "suite": "zero-shot: score the field's seven zero-shot sets instead of a corpus split "
    "(docs/evaluation.md); prints a Markdown table, --out also writes JSON and .md",
    "suite_sets": "with --suite: a comma-separated subset of ptb,wikitext,lm1b,lambada,ag_news,"
    "pubmed,arxiv (default all)",
    "suite_data": "with --suite: a folder of local copies (<set>.jsonl/.parquet/.txt or the "
    "upstream file names); sets not in it load from the Hugging Face hub",
    "blocks": "with --suite: wrap (default; rows joined and cut, MDLM's wrap=True) | pad (one "
    "block per row, padding not scored)",
    "group_rows": "with --suite and wrap blocks: rows joined and cut at a time, each group's "
    "remainder dropped (default 1000, as MDLM's datasets.map batches; 0: the whole split)",
    "gen_ppl_model": "also measure generative perplexity: sample sequences, score them with "
    "this transformers causal LM (a hub name such as gpt2-large, online only, or a local "
    "folder) and report their unigram entropy with it (docs/evaluation.md)",
    "gen_ppl.samples": "with --gen-ppl-model: sequences to sample and score (default 8)",
    "gen_ppl.steps": "with --gen-ppl-model: sampler steps over all levels (default 0: the run's)",
    "gen_ppl.precision": "with --gen-ppl-model: the sampler's draws, float64 (default) | float32 "
    "(resolves a child's chance only to 2^-24; to compare with float32 sampling)",
    "gen_ppl.temperature": "with --gen-ppl-model: temperature on child distributions (default 1.0)",
    "gen_ppl.top_p": "with --gen-ppl-model: nucleus on child distributions (default 1.0: off)",
    "gen_ppl.context": "with --gen-ppl-model: the scorer's window in tokens (default 0: its own "
    "context length)",
    "gen_ppl.split": "with --gen-ppl-model: samples longer than the window, chunks (default; "
    "MDLM: non-overlapping, each scored alone) | sliding (windows context/2 apart)",
    "gen_ppl.batch_size": "with --gen-ppl-model: sequences sampled, and windows scored, at once "
    "(default 8)",
}
EVAL_SWITCHES = {"raw_weights": "score the raw weights instead of the EMA weights"}


def eval_main(argv: Sequence[str]) -> int:
    """Parse -> Run.from_checkpoint -> evaluate_run -> the table (and --out's JSON)."""

    def body() -> int:
        from .config import RunConfig

        if wants_help(argv):
            usage = "usage: apps/eval --checkpoint DIR [--data.source ...] [--seq_len L]"
            print(help_text(usage, EVAL_FLAGS, EVAL_SWITCHES, RunConfig()))
            return 0
        values, on, overrides = parse_options(argv, set(EVAL_FLAGS), set(EVAL_SWITCHES))
        numbers = typed_options(values, {"batches": (int, 0), "samples_per_level": (int, 4)})
        fixed = sorted(k for k in overrides if k == "kind" or k.split(".")[0] in _FIXED)
        if fixed:
            raise UserError(
                f"the checkpoint fixes the model, tree and tokenizer: "
                f"{', '.join('--' + k for k in fixed)} cannot change them"
            )
        if "context" in values and "condition" not in values:
            raise UserError("--context applies to --condition (conditional scoring) only")
        if any(k.startswith("gen_ppl.") for k in values) and "gen_ppl_model" not in values:
            raise UserError("--gen-ppl.* settings apply to --gen-ppl-model only")
        out = _output_file(values.get("out"))
        _check_suite_flags(values, overrides)
        run = _trained_run(values, overrides.pop("device", "auto"), raw="raw_weights" in on)
        _warn_if_longer(run, apply_overrides(run.config, overrides).seq_len)
        if "suite" in values:
            return _suite(run, values, overrides, numbers, out, raw="raw_weights" in on)
        evaluation = _evaluate(run, overrides, values, numbers, raw="raw_weights" in on)
        print(evaluation.table())
        if out is not None:
            from .atomic import write_json

            write_json(out, evaluation.figures())
        return 0

    return run_app(body)


def _warn_if_longer(run, seq_len: int) -> None:
    if seq_len > run.config.seq_len:
        logging.getLogger(__name__).warning(
            "warning: --seq_len %d is longer than the %d tokens the model was trained on: the "
            "figures measure length extrapolation",
            seq_len,
            run.config.seq_len,
        )


_FIXED = ("model", "tree", "tokenizer")
_SUITE_ONLY = ("suite_sets", "suite_data", "blocks", "group_rows")
_NOT_WITH_SUITE = ("split", "condition", "context", "gen_ppl_model")


def _check_suite_flags(values: dict[str, str], overrides: dict[str, str]) -> None:
    if "suite" not in values:
        given = [f"--{k.replace('_', '-')}" for k in _SUITE_ONLY if k in values]
        if given:
            raise UserError(f"{', '.join(given)} apply to --suite zero-shot only")
        return
    if values["suite"] != "zero-shot":
        raise UserError(f"--suite must be zero-shot, got {values['suite']!r}")
    clashing = [f"--{k}" for k in _NOT_WITH_SUITE if k in values]
    clashing += [
        f"--{k}" for k in overrides if k not in ("seq_len", "batch_size", "seed", "device")
    ]
    if clashing:
        raise UserError(
            f"--suite zero-shot scores its own sets: {', '.join(sorted(clashing))} cannot be "
            "used with it (--seq_len, --batch_size and --seed can)"
        )


def _suite(run, values: dict[str, str], overrides: dict[str, str], numbers: dict, out, *, raw):
    """``--suite zero-shot``: the table to stdout (and --out's JSON + Markdown); status 1 when
    a set could not be scored, after every other set was."""
    from pathlib import Path

    from .zero_shot import MDLM_GROUP_ROWS, pick_sets, zero_shot_suite

    if out is not None and out.suffix == ".md":
        raise UserError(f"--out {out}: give the JSON file's name; the table goes beside it (.md)")
    config = apply_overrides(run.config, overrides)
    group_rows = typed_options(values, {"group_rows": (int, 0)})["group_rows"]  # 0 allowed
    result = zero_shot_suite(
        run,
        sets=pick_sets(values.get("suite_sets", "")),
        data_dir=Path(values["suite_data"]) if "suite_data" in values else None,
        layout=values.get("blocks", "wrap"),
        group_rows=group_rows if "group_rows" in values else MDLM_GROUP_ROWS,
        seq_len=config.seq_len,
        batch_size=config.batch_size,
        batches=numbers["batches"],
        samples_per_level=numbers["samples_per_level"],
        context_mode=_context_mode(run, {}),
        seed=config.seed,
        weights="raw weights" if raw else "EMA weights",
    )
    print(result.markdown())
    if out is not None:
        from .atomic import atomic_write, write_json

        write_json(out, result.figures())
        atomic_write(out.with_suffix(".md"), lambda tmp: tmp.write_text(result.markdown() + "\n"))
    for failed in result.failed:
        print(f"error: {failed.name}: {failed.error}", file=sys.stderr)
    return 1 if result.failed else 0


def _output_file(name: str | None):
    """``--out``'s path, checked before any scoring (not after it, when the figures would be
    lost): not a folder, its folder made and writable (a marked probe file)."""
    if name is None:
        return None
    import tempfile
    from pathlib import Path

    from tdlm_tree.io import temp_prefix

    out = Path(name)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the name of a file to write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.resolve().parent, prefix=temp_prefix(out.name)):
            pass
    except OSError as error:
        raise UserError(f"--out {out}: cannot write there ({error.strerror})") from None
    return out


def _trained_run(values: dict[str, str], device_name: str, *, raw: bool = False):
    if "checkpoint" not in values:
        raise UserError("--checkpoint DIR is required")
    from .run import Run
    from .runtime import pick_device

    device = pick_device(device_name)
    return Run.from_checkpoint(values["checkpoint"], device=device, weights="raw" if raw else "ema")


def _evaluate(run, overrides: dict[str, str], values: dict[str, str], numbers: dict, *, raw: bool):
    from .context import parse_condition
    from .evaluate import Condition, evaluate_run

    condition = None
    if "condition" in values:
        condition = Condition(parse_condition(values["condition"]), _context_mode(run, values))

    return evaluate_run(
        run,
        apply_overrides(run.config, overrides),
        split=values.get("split", "val"),
        batches=numbers["batches"],
        samples_per_level=numbers["samples_per_level"],
        weights="raw weights" if raw else "EMA weights",
        gen_ppl_model=values.get("gen_ppl_model"),
        gen_ppl_config=_gen_ppl_config(values),
        condition=condition,
    )


def _gen_ppl_config(values: dict[str, str]):
    """``--gen-ppl.<field>`` values as a :class:`GenPPLConfig` (each bad one named)."""
    import dataclasses

    from .config import refuse
    from .genppl import GenPPLConfig

    kinds = {field.name: field.type for field in dataclasses.fields(GenPPLConfig)}
    typed, problems = {}, []
    for name, value in values.items():
        if name.startswith("gen_ppl."):
            field = name.removeprefix("gen_ppl.")
            try:
                typed[field] = kinds[field](value)
            except ValueError:
                problems.append(f"--gen-ppl.{field} expects {kinds[field].__name__}, got {value!r}")
    try:
        config = GenPPLConfig(**typed)
    except UserError as error:
        problems += str(error).splitlines()
    refuse(problems)
    return config


SAMPLE_FLAGS = {
    "checkpoint": "a checkpoint folder, a run folder (its latest checkpoint), an apps/export "
    "folder, or its hub id owner/name[@revision] [required]",
    "steps": "sampler steps over all levels, at least one per level (default 64)",
    "temperature": "temperature on child distributions; 0 = greedy (default 1.0)",
    "top_p": "nucleus sampling on child distributions (default 1.0)",
    "precision": "the sampler's draws: float64 (default) | float32",
    "count": "sequences to sample (default 4)",
    "length": "tokens per sequence (default: the training sequence length)",
    "seed": "sampling seed (default 0)",
    "device": "auto (default) | cpu | cuda",
    "prompt": "continue this text ([BOS] TEXT, then --length - 2 - its tokens to generate)",
    "infill": 'fill the gaps of "PREFIX<gap:N>SUFFIX" (N tokens per gap; any number of gaps)',
    "context": "what the network sees at given positions: projection (any checkpoint) | clean "
    "(runs trained with --condition.probability > 0; their default)",
}
SAMPLE_SWITCHES = {
    "show_levels": "print each sequence at every level, coarse to fine",
    "raw_weights": "sample with the raw weights instead of the EMA weights",
}
_SAMPLE_NUMBERS = {
    "steps": (int, 64),
    "count": (int, 4),
    "length": (int, None),
    "seed": (int, 0),
    "temperature": (float, 1.0),
    "top_p": (float, 1.0),
}


def sample_main(argv: Sequence[str]) -> int:
    """Parse -> Run.from_checkpoint -> ancestral sampling -> the decoded samples."""

    def body() -> int:
        if wants_help(argv):
            print("usage: apps/sample --checkpoint DIR [options]\n")
            for name, meaning in {**SAMPLE_FLAGS, **SAMPLE_SWITCHES}.items():
                print(f"  --{name:<14} {meaning}")
            return 0
        values, on, overrides = parse_options(argv, set(SAMPLE_FLAGS), set(SAMPLE_SWITCHES))
        if overrides:
            raise UserError(f"unknown options {sorted(overrides)} (see --help)")
        n = typed_options(values, _SAMPLE_NUMBERS)
        if "prompt" in values and "infill" in values:
            raise UserError("give --prompt or --infill, not both")
        if "infill" in values and "length" in values:
            raise UserError("--infill spells out its own length (its text and <gap:N>s)")
        run = _trained_run(values, values.get("device", "auto"), raw="raw_weights" in on)
        sampler = run.sampler(
            steps=n["steps"],
            temperature=n["temperature"],
            top_p=n["top_p"],
            precision=values.get("precision", "float64"),
            keep_trajectory="show_levels" in on,
        )
        if n["steps"] < sampler.steps:
            print(f"--steps {n['steps']}: raised to {sampler.steps}, one step per tree level")
        from .inference import sample_report

        trained = run.config.seq_len
        length = n["length"] or trained
        if length > trained:
            raise UserError(
                f"--length {length}: the model was trained on {trained}-token sequences; give at "
                f"most {trained} (longer ones are untrained positions, and cost length^2)"
            )
        layout, mode = _layout(run, values, length)
        if layout is not None and len(layout.tokens) > trained:
            raise UserError(
                f"--infill spells out {len(layout.tokens)} tokens; the model was trained on "
                f"{trained}-token sequences"
            )
        print(
            sample_report(
                run, count=n["count"], length=length, sampler=sampler, seed=n["seed"],
                layout=layout, mode=mode,
            )
        )  # fmt: skip
        return 0

    return run_app(body)


def _context_mode(run, values: dict[str, str]) -> str:
    """``--context``, by default ``clean`` for runs trained to read clean context."""
    trained_clean = run.config.condition.probability > 0
    mode = values.get("context", "clean" if trained_clean else "projection")
    if mode not in ("projection", "clean"):
        raise UserError(f"--context must be projection or clean, got {mode!r}")
    return mode


def _layout(run, values: dict[str, str], length: int):
    """The prompt or infill layout asked for (or None), and the context mode to show it in."""
    from .context import infill_layout, prompt_layout

    mode = _context_mode(run, values)
    if "prompt" in values:
        return prompt_layout(run.tokenizer, values["prompt"], length), mode
    if "infill" in values:
        return infill_layout(run.tokenizer, values["infill"]), mode
    return None, mode


EXPORT_FLAGS = {
    "checkpoint": "a checkpoint folder, or a run folder (its latest checkpoint) [required]",
    "out": "the folder to write: new, empty, or an earlier export (replaced) [required]",
    "device": "auto (default) | cpu | cuda: where the model loads (and --score runs)",
}
EXPORT_SWITCHES = {
    "raw_weights": "export the raw weights instead of the EMA weights (the card says so)",
    "score": "score the exported weights on the run's validation split now (as training "
    "validates), instead of using the validation recorded at the checkpoint's step",
}


def export_main(argv: Sequence[str]) -> int:
    """Parse -> Run.from_checkpoint -> export_run (a hub folder) -> its files and how to use it."""

    def body() -> int:
        if wants_help(argv):
            print("usage: apps/export --checkpoint RUN_OR_CHECKPOINT --out DIR [options]\n")
            for name, meaning in {**EXPORT_FLAGS, **EXPORT_SWITCHES}.items():
                print(f"  --{name:<14} {meaning}")
            return 0
        values, on, overrides = parse_options(argv, set(EXPORT_FLAGS), set(EXPORT_SWITCHES))
        if overrides:
            raise UserError(f"unknown options {sorted(overrides)} (see --help)")
        if "out" not in values:
            raise UserError("--out DIR is required")
        from .hub import check_export_target, export_run

        check_export_target(values["out"])  # before any loading or scoring
        raw = "raw_weights" in on
        run = _trained_run(values, values.get("device", "auto"), raw=raw)
        evaluation = None
        if "score" in on:
            from .evaluate import evaluate_run

            evaluation = evaluate_run(
                run,
                run.config,
                batches=run.config.eval_batches,
                samples_per_level=run.config.diffusion.eval_samples_per_level,
                weights="raw weights" if raw else "EMA weights",
            )
        out = export_run(run, values["out"], weights="raw" if raw else "ema", validation=evaluation)
        print(_export_report(out))
        return 0

    return run_app(body)


def _export_report(out) -> str:
    import json

    meta = json.loads((out / "config.json").read_text())
    weights = "EMA" if meta["weights"] == "ema" else "raw"
    lines = [f"exported step {meta['step']:,} ({weights} weights) to {out}:"]
    for path in sorted(out.iterdir()):
        lines.append(f"  {path.name:<18} {path.stat().st_size / 2**10:>12,.1f} KiB")
    v = meta["validation"]
    lines.append(
        "  validation: not measured (pass --score to measure it)"
        if v is None
        else f"  validation: NELBO {v['nelbo']:.4f} nats/token on {v['tokens']:,} {v['split']} "
        f"tokens ({v['weights']})"
    )
    argument, app = ("", "sample") if weights == "EMA" else (', weights="raw"', "eval")
    lines += [
        f'load it: Run.from_checkpoint("{out}"{argument}) or uv run apps/{app} --checkpoint {out}'
        + ("" if weights == "EMA" else " --raw_weights"),
        f"push it: hf upload OWNER/NAME {out}  (then load it as OWNER/NAME)",
    ]
    return "\n".join(lines)
