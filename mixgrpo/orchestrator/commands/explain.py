"""``mixgrpo explain``: a dense reward map of one image, as a heat-map overlay PNG."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mixgrpo.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

NAME = "explain"
HELP = "heat-map overlays: where an image's CLIPScore or OCR reward, or a CLIP run's chosen class, comes from"
EPILOG = """\
methods: gradcam (Grad-CAM on the ViT's last-block patch tokens), attention (last-block CLS attention),
attention-grad (the same, gradient-weighted), gradient (pixel-gradient magnitude), ocr (Tesseract lines
scored against the quoted strings of --text, or all of it). --image may be .svg (rendered with cairosvg).
--run RUN_DIR instead: a trained CLIP classifier run (model.kind clip); Grad-CAM of the class its policy
picks (argmax) on the first --images held-out images, one grid PNG (default RUN_DIR/explain.png).
examples:
  mixgrpo explain --run runs/clip-digits --images 8
  mixgrpo explain --image poster.png --text 'a poster saying "Jazz Night"' --method gradcam --out map.png \\
      --model ViT-B-32 --pretrained laion2b_s34b_b79k
  mixgrpo explain --image poster.svg --text '"Jazz Night"' --method ocr --out ocr.png
"""
METHODS = ("gradcam", "attention", "attention-grad", "gradient", "ocr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """explain's options."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="image file (PNG, JPEG, ... or .svg)")
    source.add_argument("--run", type=Path, metavar="RUN_DIR", help="a CLIP classifier run: Grad-CAM of its choices")
    parser.add_argument("--text", help="the text the image is scored against (OCR: its quoted strings); with --image")
    parser.add_argument("--method", choices=METHODS, default="gradcam", help="map (default gradcam)")
    parser.add_argument("--out", type=Path, help="output PNG (needed with --image; default RUN_DIR/explain.png)")
    parser.add_argument("--images", type=int, default=8, help="--run: how many held-out images (default 8)")
    parser.add_argument("--adapter", type=Path, help="--run: the saved policy to load (default RUN_DIR/adapter)")
    parser.add_argument("--model", default="ViT-B-32",
                        help="open_clip model: name, local-dir:PATH, hf-hub:ORG/REPO or builtin:tiny-clip")
    parser.add_argument("--pretrained", default="laion2b_s34b_b79k", help="open_clip tag or checkpoint file")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--alpha", type=float, default=0.5, help="heat-map opacity (default 0.5)")
    parser.add_argument("--psm", type=int, default=11, help="Tesseract page segmentation mode (ocr, default 11)")
    parser.add_argument("--sigma", type=float, default=6.0, help="OCR map blur in pixels (default 6)")


def _read_image(path: Path) -> "Image.Image":
    from mixgrpo.rewards.images import load_image, render_svg

    if not path.is_file():
        raise InputError(f"--image {path}: no such file")
    image = render_svg(path.read_text()) if path.suffix.lower() == ".svg" else load_image(str(path))
    if image is None:
        raise InputError(f"--image {path}: not a readable image (or an SVG that does not render)")
    return image


def run(args: argparse.Namespace) -> int:
    """Compute the map, write the overlay, print the score."""
    if args.run is not None:
        return _run_policy(args)
    if args.text is None or args.out is None:
        raise InputError("--image needs --text and --out")
    from mixgrpo.rewards import maps

    image = _read_image(args.image)
    if args.method == "ocr":
        from mixgrpo.rewards.ocr import match_targets, prompt_targets, read_lines

        targets = prompt_targets(args.text) or [args.text]
        lines = read_lines(image, psm=args.psm)
        match = match_targets(targets, lines)
        heat = maps.ocr_map(image.size, lines, match.line_rewards, args.sigma)
        summary = f"ocr score {match.score:.3f} (targets {targets}; lines {[line.text for line in lines]})"
    else:
        from mixgrpo.rewards.clip_model import ClipScorer

        pretrained = None if args.model.startswith(("builtin:", "local-dir:", "hf-hub:")) else args.pretrained
        scorer = ClipScorer(args.model, pretrained, args.device).load()
        heat = maps.clip_map(scorer, image, args.text, args.method)
        summary = f"clipscore {scorer.score([image], [args.text])[0]:.3f}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    maps.overlay(image, heat, alpha=args.alpha).save(args.out)
    print(f"{summary}\n{args.method} map overlay written to {args.out}")
    return 0


def _run_policy(args: argparse.Namespace) -> int:
    from mixgrpo.orchestrator.policy_explain import explain_clip_run

    if args.images < 1:
        raise InputError(f"--images must be at least 1 (got {args.images})")
    out = args.out or args.run / "explain.png"
    correct, shown = explain_clip_run(args.run, out, args.images, args.adapter, args.alpha)
    print(f"greedy choice right on {correct} of {shown} held-out images\n"
          f"Grad-CAM of the chosen class written to {out}")
    return 0
