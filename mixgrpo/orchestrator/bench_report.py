"""What ``mixgrpo bench`` writes: bench.json, bench.md, timeline.png, trace.json, sweep.png."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mixgrpo.orchestrator.bench import BenchFigures
from mixgrpo.orchestrator.bench_baselines import Baselines
from mixgrpo.orchestrator.events import Span, chrome_trace
from mixgrpo.runtime import pyplot

STAGE_COLOURS = {
    "generate": "tab:blue", "score": "tab:orange", "reward": "tab:orange", "train_step": "tab:green",
    "learn": "tab:green", "load_adapter": "tab:purple", "broadcast": "tab:purple", "mixer": "tab:red",
    "other": "0.6",
}


def markdown(points: list[dict[str, Any]], baselines: Baselines | None) -> str:
    """A table a person pastes into an issue: one row per sweep point, then the verdicts."""
    lines = ["| setting | steps | samples/s | rollout tok/s | trained tok/s | generate s | reward s | learn s "
             "| broadcast s | bound |", "|---|---|---|---|---|---|---|---|---|---|"]
    for point in points:
        f: BenchFigures = point["figures"]
        label = ", ".join(f"{k}={v}" for k, v in point["setting"].items()) or "config"
        lines.append(
            f"| {label} | {f.steps} | {f.samples_per_s:.1f} | {f.rollout_tokens_per_s:.0f} | "
            f"{f.trained_tokens_per_s:.0f} | {f.stage_s['generate']:.3f} | {f.stage_s['reward']:.3f} | "
            f"{f.stage_s['learn']:.3f} | {f.stage_s['broadcast']:.4f} | {f.bound} |"
        )
    if baselines is not None:
        lines += ["", "| actor vs raw (interleaved pairs) | raw tokens/s | actor / raw: median (min-max) "
                  "| seen by driver / raw |", "|---|---|---|---|"]
        for name, ratio in (("generation", baselines.generate), ("learner step", baselines.learn)):
            lines.append(f"| {name} | {ratio.raw_tokens_per_s:.0f} | {ratio.median:.2f} ({min(ratio.actor):.2f}-"
                         f"{max(ratio.actor):.2f}) | {ratio.driver_median:.2f} |")
    lines += [""] + [f"- **{_label(p)}**: {p['figures'].learner.summary()}" for p in points]
    lines += [f"- **{_label(p)}**: {p['figures'].memory_summary()}" for p in points]
    lines += [f"- **{_label(p)}**: {p['figures'].verdict}" for p in points]
    lines += [f"- **noisy**: {flag}" for flag in (baselines.flags() if baselines else [])]
    busy = points[0]["figures"].busy_fraction
    lines += ["", "| actor | busy fraction |", "|---|---|"] + [f"| {k} | {v:.0%} |" for k, v in sorted(busy.items())]
    return "\n".join(lines) + "\n"


def _label(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point["setting"].items()) or "config"


def write_json(path: Path, points: list[dict[str, Any]], baselines: Baselines | None, env: dict[str, Any],
               config: dict[str, Any]) -> None:
    """bench.json: every figure, the config, library versions and hardware."""
    payload = {
        "environment": env, "config": config,
        "points": [{"setting": p["setting"], **asdict(p["figures"])} for p in points],
        "baselines": {"generate": baselines.generate.summary(), "learn": baselines.learn.summary(),
                      "flags": baselines.flags()} if baselines else None,
    }
    path.write_text(json.dumps(payload, indent=2))


def write_trace(path: Path, spans: list[Span]) -> None:
    """Chrome/Perfetto trace of every span."""
    path.write_text(json.dumps(chrome_trace(spans)))


def timeline_png(path: Path, spans: list[Span], last_steps: int = 4) -> None:
    """One lane per actor (and the driver), coloured by stage, over the last few steps."""
    plt = pyplot()

    steps = sorted({s.step for s in spans})[-last_steps:]
    shown = [s for s in spans if s.step in steps]
    lanes = sorted({s.lane for s in shown}, key=lambda lane: (lane != "driver", lane))
    origin = min(s.start for s in shown)
    figure, axis = plt.subplots(figsize=(11, 0.5 * len(lanes) + 1.4))
    for span in shown:
        colour = STAGE_COLOURS.get(span.stage, "0.4")
        axis.barh(lanes.index(span.lane), span.end - span.start, left=span.start - origin, height=0.7,
                  color=colour, edgecolor="white", linewidth=0.3)
    axis.set_yticks(range(len(lanes)), lanes)
    axis.invert_yaxis()
    axis.set_xlabel("seconds")
    axis.set_title(f"steps {steps[0]}-{steps[-1]}: one lane per actor, coloured by stage")
    used = sorted({s.stage for s in shown})
    handles = [plt.Rectangle((0, 0), 1, 1, color=STAGE_COLOURS.get(s, "0.4")) for s in used]
    axis.legend(handles, used, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(len(used), 5), frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def sweep_png(path: Path, points: list[dict[str, Any]]) -> None:
    """Samples/s and tokens/s of each sweep point."""
    plt = pyplot()

    labels = [_label(p).replace(", ", "\n") for p in points]
    figure, axes = plt.subplots(1, 2, figsize=(max(6, 2.2 * len(points)), 3.4))
    axes[0].bar(labels, [p["figures"].samples_per_s for p in points], color="tab:blue")
    axes[0].set_ylabel("samples / s")
    axes[1].bar(labels, [p["figures"].rollout_tokens_per_s for p in points], color="tab:green")
    axes[1].set_ylabel("rollout tokens / s")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
