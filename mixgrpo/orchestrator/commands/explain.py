"""``mixgrpo explain``: a dense reward map of one image, as a heat-map overlay PNG."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING
from mixgrpo.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

NAME = "explain"
HELP = "write a heat-map overlay of where an image's CLIPScore or OCR reward comes from"
EPILOG = """\
methods: gradcam (Grad-CAM on the ViT's last-block patch tokens), attention (last-block CLS attention),
attention-grad (the same, gradient-weighted), gradient (pixel-gradient magnitude), ocr (Tesseract lines
scored against the quoted strings of --text, or all of it). --image may be .svg (rendered with cairosvg).
examples:
  mixgrpo explain --image poster.png --text 'a poster saying "Jazz Night"' --method gradcam --out map.png \\
      --model ViT-B-32 --pretrained laion2b_s34b_b79k
  mixgrpo explain --image poster.svg --text '"Jazz Night"' --method ocr --out ocr.png
"""
METHODS = ("gradcam", "attention", "attention-grad", "gradient", "ocr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """explain's options."""
    parser.add_argument("--image", type=Path, required=True, help="image file (PNG, JPEG, ... or .svg)")
    parser.add_argument("--text", required=True, help="the text the image is scored against (OCR: its quoted strings)")
    parser.add_argument("--method", choices=METHODS, default="gradcam", help="map (default gradcam)")
    parser.add_argument("--out", type=Path, required=True, help="output PNG")
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
