"""Seed-paired TDLM ablations against MDLM, gathered from finished training runs.

    uv run benchmarks/paired_ablations.py ROOT [ROOT ...] [--out DIR] [--corpus SOURCE=NAME]

Finds every run folder under the roots (``config.json`` + ``metrics.jsonl``: ``apps/bench
quality`` outputs and single ``apps/train`` runs alike) and labels each TDLM run by how its
config differs from the ``tiny`` preset in the settings an ablation changes (``tree.*``,
``diffusion.schedule.*``, ``diffusion.level_weights``; ``default`` when none do; a tree built
from another run's embeddings is ``two-stage embedding`` and that MDLM stage's steps count
against the budget). Each TDLM run is then **paired** with the MDLM run of the same corpus,
seed and shared settings (everything else that shapes training: model, optimizer, estimator,
batch) whose step count it matches, as ``apps/bench quality`` pairs them (equal tokens): the
ratio is TDLM's validation NELBO at MDLM's last step over MDLM's there.

Because every variant shares its seed's MDLM and data order with the default TDLM of that seed,
the table also gives the **paired difference** variant - default per seed, which cancels what
the seed does to both (MDLM's erratic escape from the unigram plateau, above all), and
"learned" per level: the no-context NLL (``tdlm_tree.conditional_cross_entropies`` of the run's
own tree and training counts on the validation tokens) minus the per-level NELBO, leaf level
first, beside what one neighbour tells at that level (the no-context NLL minus
``tdlm_tree.neighbour_cross_entropies``: the previous token's node at the same level, counted
on the training split) — context that is there to be learned. Where a seed has several MDLM
runs (benches at different commits), the one with the most paired TDLM runs is used.
Writes ``paired-ablations.json``, ``.md`` and ``.png`` into ``--out``.
"""

import argparse
import dataclasses
import hashlib
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tdlm_bench.report import markdown_table, pyplot, write_report

from tdlm_train.config import _flat, preset, run_config_from_dict  # one flattening, the CLI's
from tdlm_train.data import prepare_data
from tdlm_train.errors import UserError
from tdlm_tree import conditional_cross_entropies, load_tree, neighbour_cross_entropies

# Settings that only say how a run was driven or recorded, not what it trained.
_BOOKKEEPING = (
    "run_dir", "cache_dir", "seed", "device", "parallel", "max_steps", "minutes", "log_every",
    "eval_every", "checkpoint_every", "keep_last", "sample_count", "kind", "data.source",
    "tree.embeddings", "tree.path", "diffusion.sampler.",
)
_VARIANT = ("tree.", "diffusion.schedule.", "diffusion.level_weights", "model.spend")


def _plain(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))


_DEFAULTS = _flat(_plain(preset("tiny")))


@dataclass
class TrainedRun:
    path: Path
    config: dict[str, Any]
    kind: str
    corpus: str
    seed: int
    variant: tuple[str, ...]  # the ablation settings that differ from the preset ("k=v")
    shared: tuple[str, ...]  # the other settings that shape training and differ from it
    val: dict[int, dict]  # validation records by step
    stage1: "TrainedRun | None" = None
    paired: dict = field(default_factory=dict)


def _setting(key: str, value: Any) -> str:
    name = {"level_weights": "λ"}.get(key.split(".")[-1], key.split(".")[-1])
    if isinstance(value, list):
        value = ":".join(f"{v:g}" for v in value)
    return f"{name}={value}"


def _differences(flat: dict[str, Any], keys: tuple[str, ...], inside: bool) -> tuple[str, ...]:
    return tuple(
        _setting(key, value)
        for key, value in sorted(flat.items())
        if key in _DEFAULTS
        and not key.startswith(_BOOKKEEPING)
        and value != _DEFAULTS[key]
        and key.startswith(keys) == inside
    )


def _load(path: Path, corpus_names: dict[str, str]) -> TrainedRun | None:
    try:
        raw = json.loads((path / "config.json").read_text())
        records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        # The project's own reader: older run folders' moved fields land where they are now.
        config = _plain(run_config_from_dict(raw, str(path / "config.json")))
    except (OSError, json.JSONDecodeError, UserError) as error:
        print(f"skipped {path}: {error}", file=sys.stderr)
        return None
    flat = _flat(config)
    val = {r["step"]: r for r in records if r.get("kind") == "val"}
    source = config["data"]["source"]
    return TrainedRun(
        path=path,
        config=config,
        kind=config["kind"],
        corpus=corpus_names.get(source, source),
        seed=int(config["seed"]),
        variant=_differences(flat, _VARIANT, True) if config["kind"] == "tdlm" else (),
        shared=_differences(flat, _VARIANT, False),
        val=val,
    )


def find_runs(roots: list[Path], corpus_names: dict[str, str]) -> list[TrainedRun]:
    """Every finished run under ``roots``; two-stage embedding runs carry their MDLM stage."""
    runs = {}
    for root in roots:
        for config in sorted(root.rglob("config.json")):
            run = _load(config.parent, corpus_names)
            if run is not None and run.val:
                runs[config.parent.resolve()] = run
    stages = set()
    for run in runs.values():
        source = run.config.get("tree", {}).get("embeddings")
        if run.kind == "tdlm" and source:
            # The recorded path, else the sibling of that name (folders moved since training).
            stage = runs.get(Path(source).resolve()) or runs.get(
                (run.path.parent / Path(source).name).resolve()
            )
            run.stage1 = stage
            run.variant = tuple(
                "two-stage embedding" if item == "method=embedding" else item
                for item in run.variant
            )
            if stage is not None:
                stages.add(stage.path.resolve())
    return [r for p, r in runs.items() if p not in stages]


def _stage1_steps(run: TrainedRun) -> int:
    return max(run.stage1.val) if run.stage1 else 0


def pair(runs: list[TrainedRun]) -> list[dict]:
    """(MDLM, TDLM) pairs at equal tokens: TDLM's validation at MDLM's last step."""
    mdlms = [r for r in runs if r.kind == "mdlm"]
    pairs = []
    for run in (r for r in runs if r.kind == "tdlm"):
        for mdlm in mdlms:
            if (mdlm.corpus, mdlm.seed, mdlm.shared) != (run.corpus, run.seed, run.shared):
                continue
            steps = max(mdlm.val)
            record = run.val.get(steps - _stage1_steps(run))
            if record is None:
                continue
            pairs.append({"tdlm": run, "mdlm": mdlm, "steps": steps, "record": record})
    return pairs


def _references(run: TrainedRun, cache: dict) -> dict[str, list[float]]:
    """Per level of this run's tree (leaf level first), on the validation tokens: the no-context
    NLL (``conditional_cross_entropies``) and the NLL given the previous token's node at that
    level (``neighbour_cross_entropies``), both counted on the training split."""
    config = run_config_from_dict(run.config, str(run.path / "config.json"))
    data_key = json.dumps([dataclasses.asdict(config.data), dataclasses.asdict(config.tokenizer)])
    if data_key not in cache:
        data = prepare_data(config.data, config.tokenizer, Path(config.cache_dir))
        cache[data_key] = (
            np.asarray(data.train_tokens, dtype=np.int64),
            np.asarray(data.val_tokens, dtype=np.int64),
        )
    train, val = cache[data_key]
    tree_bytes = (run.path / "tree.npz").read_bytes()
    tree_key = (data_key, hashlib.sha256(tree_bytes).hexdigest())
    if tree_key not in cache:  # seeds and schedules share trees: score each tree once
        tree = load_tree(run.path / "tree.npz")
        counts = np.load(run.path / "counts.npy", allow_pickle=False)
        cache[tree_key] = {
            "no_context": conditional_cross_entropies(tree, counts, val).tolist(),
            "one_neighbour": neighbour_cross_entropies(tree, train, val).tolist(),
        }
    return cache[tree_key]


def _spread(values: list[float]) -> dict[str, float]:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}


def _groups(pairs: list[dict]) -> dict[str, list[dict]]:
    """Pairs by corpus and shared settings; the ablation settings every TDLM run of a group has
    belong to the group (its base, ``default``), the rest label the variants."""
    by_key = defaultdict(list)
    for p in pairs:
        by_key[(p["tdlm"].corpus, p["tdlm"].shared)].append(p)
    groups = {}
    for (corpus, shared), members in sorted(by_key.items()):
        common = set.intersection(*(set(p["tdlm"].variant) for p in members))
        for p in members:
            p["variant"] = ", ".join(v for v in p["tdlm"].variant if v not in common) or "default"
        groups[", ".join([corpus, *shared, *sorted(common)])] = members
    return groups


def summarise(pairs: list[dict]) -> dict[str, Any]:
    """Per group and variant: the ratios per seed, their spread, the paired differences."""
    cache: dict = {}
    table: dict[str, dict[str, Any]] = {}
    for group, members in _groups(pairs).items():
        units = defaultdict(list)  # (seed, MDLM run) -> its pairs
        for p in members:
            units[(p["tdlm"].seed, str(p["mdlm"].path))].append(p)
        chosen: dict[int, list[dict]] = {}
        for (seed, _), unit in sorted(units.items()):
            if len(unit) > len(chosen.get(seed, ())):
                chosen[seed] = unit
        variants: dict[str, Any] = {}
        for seed, unit in sorted(chosen.items()):
            mdlm_nelbo = unit[0]["mdlm"].val[unit[0]["steps"]]["nelbo"]
            base = next((p for p in unit if p["variant"] == "default"), None)
            for p in unit:
                run, record = p["tdlm"], p["record"]
                ratio = record["nelbo"] / mdlm_nelbo
                references = _references(run, cache)
                no_context = references["no_context"]
                entry = variants.setdefault(p["variant"], {"seeds": {}})
                entry["seeds"][seed] = {
                    "ratio": ratio,
                    "tdlm_nelbo": record["nelbo"],
                    "mdlm_nelbo": mdlm_nelbo,
                    "steps": p["steps"],
                    "learned": [
                        ref - got
                        for ref, got in zip(no_context, record["level_nelbo"], strict=True)
                    ],
                    "neighbour_gain": [
                        a - b for a, b in zip(no_context, references["one_neighbour"], strict=True)
                    ],
                    "vs_default": None
                    if base is None
                    else ratio - base["record"]["nelbo"] / mdlm_nelbo,
                    "run": str(run.path),
                    "mdlm_run": str(p["mdlm"].path),
                }
        for entry in variants.values():
            seeds = entry["seeds"].values()
            entry["ratio"] = _spread([s["ratio"] for s in seeds])
            deltas = [s["vs_default"] for s in seeds if s["vs_default"] is not None]
            entry["vs_default"] = _spread(deltas) if deltas else None
            for name in ("learned", "neighbour_gain"):
                entry[name] = np.mean([s[name] for s in seeds], axis=0).tolist()
        table[group] = dict(sorted(variants.items(), key=lambda kv: (kv[0] != "default", kv[0])))
    return table


def _pm(spread: dict | None) -> str:
    if spread is None:
        return "—"
    if spread["n"] < 2:
        return f"{spread['mean']:.3f}"
    return f"{spread['mean']:.3f} ± {spread['sd']:.3f}"


def _levels(values: list[float]) -> str:
    return " / ".join(f"{x:.3f}" for x in values)


def markdown(table: dict[str, Any]) -> str:
    out = []
    for corpus, variants in table.items():
        rows = []
        for variant, e in variants.items():
            seeds = e["seeds"]
            delta = e["vs_default"]
            rows.append([
                variant,
                ", ".join(f"{s}: {seeds[s]['ratio']:.3f}" for s in sorted(seeds)),
                f"**{_pm(e['ratio'])}**",
                "—" if variant == "default" or delta is None else
                f"{delta['mean']:+.3f}" + (f" ± {delta['sd']:.3f}" if delta["n"] > 1 else ""),
                _levels(e["learned"]),
                _levels(e["neighbour_gain"]),
            ])
        out.append(f"**{corpus}**\n\n" + markdown_table(
            ["variant", "TDLM / MDLM per seed", "mean ± sd", "paired Δ vs default",
             "learned per level (leaf first)", "one neighbour tells"], rows))
    return "\n\n".join(out)


def plot(table: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(table), figsize=(6 * len(table), 4.5), squeeze=False)
    for ax, (corpus, variants) in zip(axes[0], table.items(), strict=True):
        names = list(variants)
        for i, name in enumerate(names):
            ratios = [s["ratio"] for s in variants[name]["seeds"].values()]
            ax.scatter([i] * len(ratios), ratios, s=18, color="tab:blue", zorder=3)
            ax.hlines(statistics.fmean(ratios), i - 0.3, i + 0.3, color="black", zorder=4)
        if "default" in variants:
            ax.axhline(variants["default"]["ratio"]["mean"], color="tab:green", ls="--", lw=1,
                       label="default's mean")
        ax.axhline(1.0, color="tab:red", lw=1, label="MDLM")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("TDLM / MDLM validation NELBO (equal tokens)")
        ax.set_title(f"{corpus}: dots = seeds, bars = means")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path, help="folders holding run folders")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/paired-ablations"))
    parser.add_argument("--corpus", action="append", default=[], metavar="SOURCE=NAME",
                        help="a name for a --data.source in the tables (repeatable)")
    args = parser.parse_args()
    names = dict(item.split("=", 1) for item in args.corpus)
    runs = find_runs(args.roots, names)
    pairs = pair(runs)
    if not pairs:
        sys.exit(f"no MDLM/TDLM pairs at equal steps under {', '.join(map(str, args.roots))}")
    table = summarise(pairs)
    for variants in table.values():
        for entry in variants.values():
            for seed in entry["seeds"].values():
                for name in ("learned", "neighbour_gain"):
                    seed[name] = [round(x, 6) for x in seed[name]]
    text = markdown(table)
    write_report(args.out, "paired-ablations", table, text)
    plot(table, args.out / "paired-ablations.png")
    print(text)


if __name__ == "__main__":
    main()
