"""What watches a training loop from outside it (:class:`~tdlm_train.trainer.Watcher`): the
progress bar and the metrics record. Rank 0 alone gets reports.
"""

import dataclasses

from .config import RunConfig
from .metrics import MetricsLog
from .trainer import StepReport, ValidationReport

__all__ = ["ProgressBar", "MetricsRecorder"]


class ProgressBar:
    """A tqdm bar over steps (``--max_steps``) or seconds (``--minutes``), with the loss and
    throughput, and one printed line (and a sample) per validation."""

    def __init__(self, config: RunConfig, start_step: int, *, enabled: bool = True) -> None:
        from tqdm.auto import tqdm

        self.by_steps = bool(config.max_steps)
        self.exact = config.kind == "ar"  # an exact NLL, not a bound
        if self.by_steps:
            self.bar = tqdm(
                total=config.max_steps,
                initial=start_step,
                unit="step",
                disable=not enabled,
                dynamic_ncols=True,
            )
        else:
            self.bar = tqdm(
                total=round(config.minutes * 60),
                unit="s",
                disable=not enabled,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.0f}/{total}s [{elapsed}<{remaining}{postfix}]",
            )

    def on_step(self, report: StepReport) -> None:
        self.bar.set_postfix(
            step=report.step,
            loss=f"{report.nelbo:.3f}",
            tok_s=f"{report.tokens_per_second:,.0f}",
            refresh=False,
        )
        if self.by_steps:
            self.bar.update(1)
        else:
            self.bar.update(float(max(0.0, min(report.seconds, self.bar.total) - self.bar.n)))

    def on_validation(self, report: ValidationReport) -> None:
        v = report.validation
        levels = ", ".join(f"{x:.3f}" for x in v.level_nelbo)
        figure = "NLL" if self.exact else "NELBO"
        self.bar.write(
            f"step {report.step}: val {figure} {v.nelbo:.4f} (levels {levels}), "
            f"PPL {v.perplexity:.2f}, BPB {v.bits_per_byte:.4f}"
            f"\n  sample: {report.samples[0][:160]!r}"
        )

    def close(self) -> None:
        self.bar.close()


class MetricsRecorder:
    """``metrics.jsonl`` (and TensorBoard): a ``train`` line every ``log_every`` steps, a
    ``val`` line per validation."""

    def __init__(self, log: MetricsLog, log_every: int) -> None:
        self.log, self.log_every = log, log_every

    def on_step(self, report: StepReport) -> None:
        if report.step % self.log_every == 0:
            record = {
                "kind": "train",
                "step": report.step,
                "tokens": report.tokens,
                "nelbo": report.nelbo,
                "lr": report.lr,
                "grad_norm": report.grad_norm,
                "seconds": report.seconds,
            }
            self.log.write(record)

    def on_validation(self, report: ValidationReport) -> None:
        figures = dataclasses.asdict(report.validation)
        figures["val_tokens"] = figures.pop("tokens")  # "tokens" means training tokens seen
        record = {
            "kind": "val",
            "step": report.step,
            "tokens": report.tokens,
            "seconds": report.seconds,
            "weights": report.weights,
        }
        self.log.write(record | figures | {"sample": report.samples[0][:400]})

    def close(self) -> None:
        self.log.close()
