"""A small mutation tester: plant one plausible bug at a time in named functions of a module and
see whether the named tests fail (issue 27). Mutations, each applied to one AST node:
arithmetic operator swaps (+ -, * /, ** *), comparison flips (< <=, > >=, == !=), a numeric
constant c -> c + 1, and dropping a unary minus. The mutated module is written into a temporary
copy of its package, put first on PYTHONPATH, so the working tree is never changed.

    M=packages/tdlm-diffusion/src/tdlm_diffusion/elbo.py
    uv run python benchmarks/mutation.py --module $M \
        --functions masked_count,harmonic_count,_count_nelbo \
        --tests packages/tdlm-diffusion/tests/test_i2_sequences.py --max-mutants 20 \
        --out docs/results/mutation/elbo.json

Writes JSON (every mutant: function, line, change, killed or survived) and a Markdown table
beside it. A mutant counts as killed when the tests fail or time out (--timeout seconds).
"""

import argparse
import ast
import copy
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
         ast.Pow: ast.Mult, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE,
         ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}  # fmt: skip


def mutants(tree: ast.Module, functions: set[str]):
    """``(function, line, description, mutated tree)`` for every mutation site."""
    for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        if fn.name not in functions:
            continue
        for node in ast.walk(fn):
            sites = []
            if isinstance(node, ast.BinOp) and type(node.op) in SWAPS:
                sites.append(("op", type(node.op).__name__, SWAPS[type(node.op)].__name__))
            if isinstance(node, ast.Compare):
                for i, op in enumerate(node.ops):
                    if type(op) in SWAPS:
                        sites.append((f"cmp{i}", type(op).__name__, SWAPS[type(op)].__name__))
            if isinstance(node, ast.Constant) and type(node.value) in (int, float):
                sites.append(("const", repr(node.value), repr(node.value + 1)))
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
                sites.append(("neg", "-x", "x"))
            for kind, before, after in sites:
                yield fn.name, node.lineno, kind, before, after, node


def apply(tree: ast.Module, target: ast.AST, kind: str) -> ast.Module:
    mutated = copy.deepcopy(tree)
    index = list(ast.walk(tree)).index(target)
    node = list(ast.walk(mutated))[index]
    if kind == "op":
        node.op = SWAPS[type(node.op)]()
    elif kind.startswith("cmp"):
        i = int(kind[3:])
        node.ops[i] = SWAPS[type(node.ops[i])]()
    elif kind == "const":
        node.value = node.value + 1
    elif kind == "neg":  # -x -> x: replace the UnaryOp in its parent
        for parent in ast.walk(mutated):
            for field, value in ast.iter_fields(parent):
                if value is node:
                    setattr(parent, field, node.operand)
                elif isinstance(value, list) and node in value:
                    value[value.index(node)] = node.operand
    return mutated


def package_root(module: Path) -> tuple[Path, Path]:
    """The folder on sys.path (``src``) and the module's path below it."""
    parts = module.resolve().parts
    src = Path(*parts[: parts.index("src") + 1])
    return src, module.resolve().relative_to(src)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", required=True, type=Path)
    parser.add_argument("--functions", required=True)
    parser.add_argument("--tests", required=True, help="comma-separated pytest paths")
    parser.add_argument("--max-mutants", type=int, default=0, help="0: every one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    tree = ast.parse(args.module.read_text())
    found = list(mutants(tree, set(args.functions.split(","))))
    if args.max_mutants and len(found) > args.max_mutants:
        found = sorted(random.Random(args.seed).sample(found, args.max_mutants),
                       key=lambda m: m[1])  # fmt: skip
    src, relative = package_root(args.module)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        package = relative.parts[0]
        for fn, line, kind, before, after, node in found:
            shutil.rmtree(Path(tmp) / package, ignore_errors=True)
            shutil.copytree(src / package, Path(tmp) / package)
            (Path(tmp) / relative).write_text(ast.unparse(apply(tree, node, kind)))
            env = {**os.environ, "PYTHONPATH": tmp + os.pathsep + os.environ.get("PYTHONPATH", "")}
            command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                       *args.tests.split(",")]  # fmt: skip
            try:
                run = subprocess.run(command, env=env, capture_output=True, timeout=args.timeout)
                killed = run.returncode != 0
            except subprocess.TimeoutExpired:
                killed = True
            results.append({"function": fn, "line": line, "change": f"{before} -> {after}",
                            "killed": killed})  # fmt: skip
            print(f"{'killed  ' if killed else 'SURVIVED'} {fn}:{line} {before} -> {after}",
                  flush=True)  # fmt: skip
    report = {"module": str(args.module), "functions": args.functions, "tests": args.tests,
              "sites": len(list(mutants(tree, set(args.functions.split(","))))),
              "mutants": results, "killed": sum(r["killed"] for r in results)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"{report['killed']} of {len(results)} mutants killed ({report['sites']} sites) in "
             f"{args.module}: {args.functions}", "", "| function | line | change | result |",
             "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['function']} | {r['line']} | `{r['change']}` | "
              f"{'killed' if r['killed'] else '**survived**'} |" for r in results]  # fmt: skip
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
