"""``mixgrpo thm3-check`` outputs: the three sources, thm3.json, thm3.png and a console table.

Sources:

- ``synthetic``: the softmax bandit of :mod:`mixgrpo.analysis.bandit` (exact
  scores and gradients), plus the package-style random-score analysis of the
  same reward tensor at every group size.
- ``from-run``: a finished run's adapter, generator and reward channels
  (:mod:`mixgrpo.analysis.lm_scores`), projected LoRA scores.
- ``rewards``: a saved reward tensor ``(P, K, m, R)`` (``.npy``), the
  package's analysis only (random scores).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mixgrpo.analysis.bandit import bandit_sample, make_bandit
from mixgrpo.analysis.thm3 import (
    ESTIMATORS,
    RandomScoreAnalysis,
    RealScoreAnalysis,
    analyze_random_scores,
    analyze_real_scores,
)
from mixgrpo.errors import InputError
from mixgrpo.runtime import pyplot

JSON_NAME, PLOT_NAME = "thm3.json", "thm3.png"
_COLOURS = {"na": "tab:blue", "an": "tab:red"}
_MARKERS = {"na": "o", "an": "s"}


def _floats(values: np.ndarray) -> list[Any]:
    return np.asarray(values, dtype=float).round(10).tolist()


def real_score_report(analysis: RealScoreAnalysis) -> dict[str, Any]:
    """JSON-ready per-m figures (means over prompts, plus per-prompt arrays) and the fitted slopes."""
    per_m = []
    for check in analysis.checks:
        entry: dict[str, Any] = {"m": check.m, "groups": check.groups,
                                 "score_variance": _floats(check.score_variance)}
        for mode, est in check.estimators.items():
            entry[mode] = {
                "measured": float(est.measured.mean()),
                "measured_se": float(np.sqrt((est.measured_se**2).sum()) / len(est.measured_se)),
                "predicted": float(est.predicted.mean()),
                "ratio": est.ratio,
                "coupled_prediction": float(est.coupled.mean()),
                "ratio_to_coupled": float(est.measured.mean() / est.coupled.mean()),
                "bias_sq": None if est.bias_sq is None else float(est.bias_sq.mean()),
                "per_prompt": {"measured": _floats(est.measured), "predicted": _floats(est.predicted)},
            }
        per_m.append(entry)
    return {"per_m": per_m, "slope": {mode: analysis.slope(mode) for mode in ESTIMATORS}}


def random_score_report(result: RandomScoreAnalysis) -> dict[str, Any]:
    """The package's ``Thm3Result`` as JSON, with the NA and AN ratios of the means."""
    return {
        "realized_na": _floats(result.realized_na),
        "realized_an": _floats(result.realized_an),
        "predicted_per_prompt": _floats(result.predicted_per_prompt),
        "predicted_pooled": result.predicted_pooled,
        "ratio_na": float(result.realized_na.mean() / result.predicted_per_prompt.mean()),
        "ratio_an": float(result.realized_an.mean() / result.predicted_per_prompt.mean()),
        "influence_na": _floats(result.influence_na),
        "influence_an": _floats(result.influence_an),
        "pooled_C": _floats(result.pooled_C),
    }


def synthetic_check(prompts: int, groups: int, group_sizes: list[int], rho: float, signal: float,
                    scales: list[float], weights: list[float], actions: int, seed: int,
                    score_seed: int) -> tuple[dict[str, Any], RealScoreAnalysis]:
    """The bandit check: real scores (against the exact gradient) and the package-style analysis."""
    if len(scales) != len(weights):
        raise InputError(f"--scales has {len(scales)} values, --weights {len(weights)}: one per channel")
    bandit = make_bandit(prompts, actions, np.asarray(scales), rho, signal, seed)
    sample = bandit_sample(bandit, np.asarray(weights), groups * max(group_sizes), seed + 1)
    analysis = analyze_real_scores(sample, np.asarray(weights), group_sizes)
    random_scores = {}
    for m in sorted(group_sizes):
        usable = (sample.rewards.shape[1] // m) * m
        tensor = sample.rewards[:, :usable].reshape(prompts, -1, m, len(weights))
        random_scores[str(m)] = random_score_report(analyze_random_scores(tensor, np.asarray(weights), score_seed))
    report = {
        "source": "synthetic",
        "settings": {"prompts": prompts, "groups_at_largest_m": groups, "group_sizes": sorted(group_sizes),
                     "rho": rho, "signal": signal, "scales": scales, "weights": weights, "actions": actions,
                     "seed": seed, "score_seed": score_seed},
        "known": {"score_variance": _floats(bandit.score_variance()),
                  "reward_correlation_mean": _floats(bandit.reward_correlation().mean(axis=0))},
        "real_scores": real_score_report(analysis),
        "random_scores": random_scores,
    }
    return report, analysis


def from_run_check(run_dir: Path, prompts: int, groups: int, group_sizes: list[int], projection_dim: int,
                   seed: int, overrides: list[str]) -> tuple[dict[str, Any], RealScoreAnalysis]:
    """The language-model check on a finished run (variance across groups; no known true gradient)."""
    from mixgrpo.analysis.lm_scores import (
        sample_run,  # torch + transformers: only for this source
    )

    run = sample_run(run_dir, prompts, groups, max(group_sizes), projection_dim, seed, overrides)
    analysis = analyze_real_scores(run.sample, run.weights, group_sizes)
    report = {
        "source": "from-run",
        "settings": {"run_dir": str(run_dir), "prompts": prompts, "groups_at_largest_m": groups,
                     "group_sizes": sorted(group_sizes), "projection_dim": projection_dim, "seed": seed,
                     "overrides": overrides},
        "run": {"channels": run.channel_names, "weights": _floats(run.weights), "prompts": run.prompts,
                "lora_parameters": run.lora_parameters, "unique_sequences": run.unique_sequences,
                "null_rate": _floats(np.isnan(run.sample.rewards).mean(axis=(0, 1))),
                "reward_mean": _floats(np.nanmean(run.sample.rewards, axis=(0, 1)))},
        "real_scores": real_score_report(analysis),
    }
    return report, analysis


def rewards_file_check(path: Path, weights: list[float], score_seed: int) -> tuple[dict[str, Any], RandomScoreAnalysis]:
    """The package's analysis of a saved reward tensor ``(P, K, m, R)``."""
    if not path.is_file():
        raise InputError(f"--rewards {path}: no such file")
    rewards = np.load(path)
    result = analyze_random_scores(rewards, np.asarray(weights, dtype=np.float64), score_seed)
    report = {"source": "rewards", "settings": {"path": str(path), "shape": list(rewards.shape),
                                                "weights": weights, "score_seed": score_seed},
              "random_scores": random_score_report(result)}
    return report, result


def write_json(report: dict[str, Any], out_dir: Path) -> Path:
    """thm3.json in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / JSON_NAME
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def _identity_line(axis: Any, values: list[np.ndarray]) -> None:
    flat = np.concatenate([np.ravel(v) for v in values])
    flat = flat[flat > 0]
    low, high = flat.min() / 1.5, flat.max() * 1.5
    axis.plot([low, high], [low, high], "k--", linewidth=1, label="y = x")


def _plain_log_ticks(axis: Any, ms: list[int] | None = None) -> None:
    """Log axes labelled 1, 2, 5 per decade in plain numbers (the m values on x when given)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for side in (axis.xaxis, axis.yaxis):
        side.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        side.set_major_formatter(plain)
        side.set_minor_locator(NullLocator())
    if ms is not None:
        axis.xaxis.set_major_locator(FixedLocator(ms))


def plot_real_scores(analysis: RealScoreAnalysis, path: Path, title: str) -> Path:
    """Left: predicted vs realized per (prompt, m), NA and AN, y = x. Right: MSE against m, log-log."""
    plt = pyplot()
    figure, (scatter, law) = plt.subplots(1, 2, figsize=(10, 4.2))
    plotted = []
    for mode in ESTIMATORS:
        predicted = np.concatenate([c.estimators[mode].predicted for c in analysis.checks])
        measured = np.concatenate([c.estimators[mode].measured for c in analysis.checks])
        scatter.loglog(predicted, measured, _MARKERS[mode], color=_COLOURS[mode], alpha=0.6, markersize=4,
                       label=f"{mode.upper()} (one point per prompt and m)")
        plotted += [predicted, measured]
        ms = [c.m for c in analysis.checks]
        law.loglog(ms, [c.estimators[mode].measured.mean() for c in analysis.checks], _MARKERS[mode] + "-",
                   color=_COLOURS[mode], label=f"{mode.upper()} realized (slope {analysis.slope(mode):.2f})")
        law.loglog(ms, [c.estimators[mode].predicted.mean() for c in analysis.checks], "--",
                   color=_COLOURS[mode], alpha=0.7, label=f"{mode.upper()} predicted")
        law.loglog(ms, [c.estimators[mode].coupled.mean() for c in analysis.checks], ":",
                   color=_COLOURS[mode], alpha=0.7, label=f"{mode.upper()} coupled prediction")
    _identity_line(scatter, plotted)
    _plain_log_ticks(scatter)
    scatter.set_xlabel(r"predicted MSE  $\hat\tau^2\, w^\top \hat C w / m$")
    scatter.set_ylabel("realized MSE")
    scatter.legend(fontsize=8)
    scatter.grid(True, which="both", alpha=0.3)
    law.set_xlabel("group size m")
    law.set_ylabel("MSE (mean over prompts)")
    _plain_log_ticks(law, ms)
    law.legend(fontsize=8)
    law.grid(True, which="both", alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def plot_random_scores(result: RandomScoreAnalysis, path: Path, title: str) -> Path:
    """The package's money plot: per-prompt predicted vs realized, NA and AN, y = x."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    predicted = result.predicted_per_prompt
    for mode, realized in (("na", result.realized_na), ("an", result.realized_an)):
        axis.loglog(predicted, realized, _MARKERS[mode], color=_COLOURS[mode], alpha=0.6, label=mode.upper())
    _identity_line(axis, [predicted, result.realized_na, result.realized_an])
    _plain_log_ticks(axis)
    axis.set_xlabel(r"predicted MSE  $w^\top \hat C w / m$")
    axis.set_ylabel(r"realized MSE  $\mathrm{Var}_k(\hat g)$")
    axis.legend(fontsize=8)
    axis.grid(True, which="both", alpha=0.3)
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def summary_table(analysis: RealScoreAnalysis) -> str:
    """Console table: per m, realized, predicted and their ratio for NA and AN, then the slopes."""
    lines = [f"{'m':>4} {'groups':>7}  " + "  ".join(
        f"{mode.upper() + ' realized':>12} {'predicted':>10} {'ratio':>6} {'/coupled':>8}" for mode in ESTIMATORS)]
    for check in analysis.checks:
        cells = []
        for mode in ESTIMATORS:
            est = check.estimators[mode]
            cells.append(f"{est.measured.mean():>12.4g} {est.predicted.mean():>10.4g} {est.ratio:>6.3f} "
                         f"{est.measured.mean() / est.coupled.mean():>8.3f}")
        lines.append(f"{check.m:>4} {check.groups:>7}  " + "  ".join(cells))
    lines.append("slope of log MSE vs log m: " + "  ".join(
        f"{mode.upper()} {analysis.slope(mode):+.3f}" for mode in ESTIMATORS))
    return "\n".join(lines)
