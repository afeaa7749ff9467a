"""Hugging Face Hub folders (issue 13): a trained model exported as a folder a user can push as
is, and loaded back from that folder or from its hub repo id.

:func:`export_run` writes, atomically, the folder :data:`EXPORT_FILES` name:

* ``config.json`` — ``model_type: "tdlm"``, the format version, the kind, which weights, the
  :class:`~tdlm_train.config.RunConfig` as trained (``run_config``), step and training tokens,
  the tree's level sizes, the vocabulary size, the tokenizer fingerprint, the parameter count,
  the measured validation (or ``null``: never invented) and the library versions;
* ``model.safetensors`` — one set of weights, the EMA weights unless the raw ones are asked for;
* ``tokenizer.json``, ``tree.npz``, ``counts.npy`` — the run folder's own files (the counts feed
  the entropy allocation of the schedule, so the process is rebuilt exactly);
* ``README.md`` — the model card, with YAML front matter in the hub's convention.

:meth:`Run.from_checkpoint <tdlm_train.run.Run.from_checkpoint>` takes such a folder, or its hub
repo id (:mod:`.pretrained` fetches and checks it).
"""

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from tdlm_nn import param_breakdown

from .atomic import remove_stale, replace_dir, temp_dir_beside, write_json
from .errors import UserError
from .evaluate import Evaluation, Validation
from .metrics import read_metrics
from .overrides import config_to_dict
from .pretrained import (
    EXPORT_FILES,
    FORMAT_VERSION,
    MODEL_TYPE,
    export_config_of,
    file_digest,
    library_version,
)
from .run import Run
from .run_files import RunFiles, save_run_files, tree_fingerprint

logger = logging.getLogger(__name__)

__all__ = [
    "export_run",
    "check_export_target",
    "recorded_validation",
    "model_card",
]


# --- export ----------------------------------------------------------------------------------
def export_run(
    run: Run, out_dir: str | Path, *, weights: str = "ema", validation: Evaluation | None = None
) -> Path:
    """Write ``run``'s model to ``out_dir`` as a hub folder; returns the folder.

    ``weights`` names the weights ``run.model`` holds (as ``Run.from_checkpoint`` loaded them):
    config.json and the card say which. ``validation`` is a measurement of exactly those weights
    (``evaluate_run``); by default the validation the run folder's ``metrics.jsonl`` recorded at
    the checkpoint's step (EMA weights only), else none. The folder is assembled beside
    ``out_dir`` and renamed into place; an existing ``out_dir`` is replaced only if it is empty
    or a previous export left as written (nothing but :data:`EXPORT_FILES`, config.json naming
    model_type tdlm, every other file as its ``files`` digests record), so nothing else is ever
    deleted. A link at ``out_dir`` stays a link: the folder it points to is written.
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    out = check_export_target(out_dir)
    if validation is None and weights == "ema":
        validation = recorded_validation(run)
    meta = _export_config(run, weights, validation)
    for path in remove_stale(out.parent):
        logger.info("removed %s, left by an export that was killed", path)
    try:
        tmp = temp_dir_beside(out)
    except OSError as error:
        raise UserError(f"--out {out}: cannot write there ({error.strerror})") from None
    try:
        save_run_files(tmp, RunFiles(run.config, run.tokenizer, run.tree, run.counts))
        tensors = {k: v.detach().contiguous().cpu() for k, v in run.model.state_dict().items()}
        save_file(tensors, tmp / "model.safetensors")
        (tmp / "README.md").write_text(model_card(meta), encoding="utf-8")
        written = [name for name in EXPORT_FILES if name != "config.json"]
        meta["files"] = {name: file_digest(tmp / name) for name in written}
        write_json(tmp / "config.json", meta)  # the export's: the RunConfig wrapped in metadata
        replace_dir(tmp, out)
    except (OSError, SafetensorError) as error:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0][:200]
        raise UserError(f"could not write the export {out} ({reason})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_export_target(out_dir: str | Path) -> Path:
    """``out_dir`` if an export may be written there: missing, empty, or a previous export
    as it was written (replaced whole); anything else is refused, untouched. A link is
    followed (and kept): its target must be such a folder."""
    out = Path(out_dir)
    if out.is_symlink() and not out.exists():
        raise UserError(f"--out {out} is a link to {os.readlink(out)}, which does not exist")
    if not out.exists():
        return out
    if not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder to export into")
    names = {p.name for p in out.iterdir()}
    if not names:
        return out
    previous = export_config_of(out) if names <= set(EXPORT_FILES) else None
    if previous is None or previous.get("model_type") != MODEL_TYPE:
        raise UserError(
            f"--out {out} holds other files and is not a previous export; give a new or empty "
            "folder (an export replaces only an earlier export)"
        )
    recorded = previous.get("files")
    edited = sorted(
        name for name in names - {"config.json"}
        if isinstance(recorded, dict) and recorded.get(name) != file_digest(out / name)
    )  # fmt: skip
    if edited:
        raise UserError(
            f"--out {out}: {', '.join(edited)} changed since that export was written; move "
            "the folder aside or give another --out (an export replaces only its own files)"
        )
    return out


def recorded_validation(run: Run) -> Evaluation | None:
    """The validation training recorded for ``run``'s step (its run folder's ``metrics.jsonl``,
    the EMA weights as the trainer scores them), or ``None``."""
    try:
        records = read_metrics(run.folder / "metrics.jsonl")
    except (OSError, ValueError):  # a line cut short by a killed run: no record to trust
        return None
    records = [r for r in records if r.get("kind") == "val" and r.get("step") == run.state.step]
    if not records:
        return None
    r = records[-1]  # a resumed run may have validated this step again
    try:
        validation = Validation(
            nelbo=float(r["nelbo"]),
            level_nelbo=[float(x) for x in r["level_nelbo"]],
            perplexity=float(r["perplexity"]),
            bits_per_byte=float(r["bits_per_byte"]),
            tokens=int(r["val_tokens"]),
            text_bytes=int(r["text_bytes"]),
        )
    except (KeyError, TypeError, ValueError):  # a record from before these figures existed
        return None
    return Evaluation(
        str(run.checkpoint), run.state.step, str(r["weights"]), run.config.data.source, "val",
        validation,
    )  # fmt: skip


def _export_config(run: Run, weights: str, evaluation: Evaluation | None) -> dict[str, Any]:
    config = run.config
    validation = None
    if evaluation is not None:
        validation = dataclasses.asdict(evaluation.validation) | {
            "source": evaluation.source,
            "split": evaluation.split,
            "step": evaluation.step,
            "weights": evaluation.weights,
            "samples_per_level": config.diffusion.eval_samples_per_level,
        }
    return {
        "model_type": MODEL_TYPE,
        "format_version": FORMAT_VERSION,
        "kind": config.kind,
        "weights": weights,
        "run_config": config_to_dict(config),
        "step": run.state.step,
        "tokens": run.state.tokens,
        "parameters": param_breakdown(run.model).total,
        "level_sizes": list(run.tree.level_sizes),
        "vocab_size": run.tree.vocab_size,
        "tokenizer_fingerprint": run.tokenizer.fingerprint,
        "tree_fingerprint": tree_fingerprint(run.tree),
        "validation": validation,
        "library": {"tdlm-train": library_version("tdlm-train"), "torch": torch.__version__},
    }


# --- the model card --------------------------------------------------------------------------
def model_card(meta: dict[str, Any]) -> str:
    """``README.md`` for an export's ``config.json`` contents ``meta``: YAML front matter (the
    hub reads library_name, tags, datasets, metrics), then what the model is, its data, its
    measured NELBO, and how to load and push it."""
    config = meta["run_config"]
    source = config["data"]["source"]
    validation = meta["validation"]
    front = ["---", "library_name: tdlm", "pipeline_tag: text-generation", "tags:"]
    family = (
        ("autoregressive", "causal-lm")
        if meta["kind"] == "ar"
        else ("diffusion-language-model", "discrete-diffusion")
    )
    tags = dict.fromkeys(("tdlm", meta["kind"], *family))
    front += [f"- {tag}" for tag in tags]  # dict: no repeat when the kind is tdlm
    if source.startswith("hf:"):  # a hub dataset: name it so the hub links it
        front += ["datasets:", f"- {json.dumps(source.removeprefix('hf:').partition(':')[0])}"]
    if validation is not None:
        front += ["metrics:", "- perplexity"]
    front.append("---")

    levels = meta["level_sizes"]
    kind = {
        "tdlm": "TDLM: a tree-structured diffusion language model (Wu et al., 2026). Tokens are "
        "noised up a vocabulary tree, level by level, to a single root; the network chooses "
        "which child each position moves to next",
        "mdlm": "MDLM: a masked diffusion language model (Sahoo et al., 2024), TDLM's baseline: "
        "its tree is flat, so the network predicts each masked token over the whole vocabulary",
        "ar": "the autoregressive baseline: MDLM's network with causal attention, predicting "
        "the next token over the whole vocabulary (its NLL is exact, not a bound)",
    }[meta["kind"]]
    weights = (
        "the exponential moving average of the weights (EMA), as validation scores them"
        if meta["weights"] == "ema"
        else "the raw weights (not their EMA), exported with --raw_weights"
    )
    tokens = meta["tokens"]
    lines = [
        *front,
        "",
        f"# {meta['kind'].upper()} language model, step {meta['step']:,}",
        "",
        f"{kind}. Trained and exported with the `tdlm` libraries (`tdlm-train`).",
        "",
        "## Model",
        "",
        f"- kind: `{meta['kind']}`; {meta['parameters']:,} parameters "
        f"(tdlm-nn preset `{config['model']['preset']}`)",
        f"- vocabulary tree: depth {len(levels) - 1}, level sizes {levels} "
        f"(leaves first; built by `{config['tree']['method']}`, K = {config['tree']['branching']})",
        f"- vocabulary: {meta['vocab_size']:,} tokens (`tokenizer.json`, fingerprint "
        f"`{meta['tokenizer_fingerprint']}`)",
        f"- sequence length: {config['seq_len']} tokens per block (BOS + text + EOS)",
        f"- weights: {weights}",
        "",
        "## Training data",
        "",
        f"- source: `{source}` (validation share {config['data']['val_fraction']}, split by "
        "document)",
        f"- {meta['step']:,} optimizer steps, {tokens:,} training tokens "
        f"(batches of {config['batch_size']} x {config['seq_len']} tokens)",
        "",
        "## Measured NLL" if meta["kind"] == "ar" else "## Measured NELBO",
        "",
        *_validation_lines(validation, meta["weights"], exact=meta["kind"] == "ar"),
        "",
        "## How to load",
        "",
        "`OWNER/NAME` is the repo this folder was pushed to (or the folder's own path):",
        "",
        "```python",
        "from tdlm_train import Run",
        "",
        f'run = Run.from_checkpoint("OWNER/NAME"{_weights_argument(meta)})  # eval mode',
        "```",
        "",
        "```",
        "uv run apps/sample --checkpoint OWNER/NAME --show-levels"
        if meta["weights"] == "ema"
        else "uv run apps/eval --checkpoint OWNER/NAME --raw_weights",
        "```",
        "",
        "Offline, `HF_HUB_OFFLINE=1` loads the copy in the Hugging Face cache.",
        "",
        "## How to push",
        "",
        "```",
        "hf upload OWNER/NAME FOLDER   # huggingface_hub >= 1.0; before: huggingface-cli upload",
        "```",
        "",
        'or `HfApi().upload_folder(folder_path="FOLDER", repo_id="OWNER/NAME")` from Python.',
        "",
        "## Files",
        "",
        "`config.json` (model_type `tdlm`, the training config as `run_config`, step, tokens, "
        "tree shape, validation, versions), `model.safetensors`, `tokenizer.json`, `tree.npz` "
        "(the vocabulary tree), `counts.npy` (training-token counts, for the noise schedule), "
        "this `README.md`.",
        "",
    ]
    return "\n".join(lines)


def _validation_lines(
    validation: dict[str, Any] | None, weights: str, *, exact: bool = False
) -> list[str]:
    """The validation table; ``exact``: the AR baseline's, an exact NLL (one level, no bound)."""
    if validation is None:
        if weights == "ema":
            return ["Not measured for this checkpoint: `uv run apps/eval --checkpoint FOLDER`."]
        return ["Not measured: `uv run apps/eval --checkpoint FOLDER --raw_weights`."]
    if exact:
        figure, levels, what = "NLL (nats/token, exact)", [], "The NLL is exact (next-token)."
    else:
        figure = "NELBO (nats/token)"
        levels = [
            f"| L_{h} (level {h}) | {x:.4f} |" for h, x in enumerate(validation["level_nelbo"])
        ]
        what = "NELBO bounds the negative log-likelihood; L_h is level h's share (leaves first)."
    rows = [
        "| figure | value |",
        "|---|---|",
        f"| {figure} | {validation['nelbo']:.4f} |",
        *levels,
        f"| perplexity{'' if exact else ' (upper bound)'} | {validation['perplexity']:.3f} |",
        f"| bits per byte | {validation['bits_per_byte']:.4f} |",
    ]
    return [
        f"On the {validation['split']} split of `{validation['source']}` at step "
        f"{validation['step']:,}: {validation['tokens']:,} tokens ({validation['text_bytes']:,} "
        f"bytes of text), noise draws per level: {validation['samples_per_level']}, "
        f"{validation['weights']}. {what}",
        "",
        *rows,
    ]


def _weights_argument(meta: dict[str, Any]) -> str:
    return "" if meta["weights"] == "ema" else ', weights="raw"'
