"""``clipscore``: CLIPScore of a text against an image with an open_clip model.

Two pairings, picked by where the image comes from (see mixgrpo.rewards.images):

- ``image_key: image`` (the prompt's image) scored against the completion
  (captioning, description tasks);
- ``render: svg`` (the completion drawn) scored against the prompt (text-to-SVG).

``text: prompt | completion`` overrides the pairing, ``text_key`` takes the text
from a metadata column instead. Value: ``w * max(cos, 0)`` (w = 2.5, Hessel et
al. 2021); null where there is no image. The model loads once per actor
(``setup``), on the actor's GPU for ``device: gpu`` channels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixgrpo.rewards.channels.base import ScoringInput, pop_options, register
from mixgrpo.rewards.clip_model import CLIPSCORE_W, ClipScorer
from mixgrpo.rewards.images import ImageSource

_DEFAULTS = {
    "model": "ViT-B-32", "pretrained": None, "device": "auto", "batch_size": 32, "w": CLIPSCORE_W,
    "text": None, "text_key": None, "map_method": "gradcam", **ImageSource.OPTIONS,
}


class ClipScoreChannel:
    """CLIPScore for a batch; ``reward_maps`` explains it with a dense map per completion."""

    def __init__(self, options: dict[str, Any]) -> None:
        opts = pop_options(options, "clipscore", _DEFAULTS)
        self.source = ImageSource("clipscore", opts)
        self.text = opts["text"] or ("prompt" if opts["render"] else "completion")
        self.text_key = opts["text_key"]
        if self.text not in ("prompt", "completion"):
            raise ValueError("channel kind 'clipscore': options.text must be 'prompt' or 'completion'")
        model, pretrained = str(opts["model"]), opts["pretrained"]
        if pretrained is None and not model.startswith(("builtin:", "local-dir:", "hf-hub:")):
            raise ValueError(f"channel kind 'clipscore': model {model!r} needs options.pretrained "
                             "(a tag such as laion2b_s34b_b79k, or a checkpoint file)")
        if int(opts["batch_size"]) < 1 or float(opts["w"]) <= 0:
            raise ValueError("channel kind 'clipscore': options.batch_size >= 1 and options.w > 0")
        if opts["map_method"] not in ("gradcam", "attention", "gradient"):
            raise ValueError("channel kind 'clipscore': options.map_method must be gradcam, attention or gradient")
        self.map_method = opts["map_method"]
        try:
            self.scorer = ClipScorer(model, pretrained, str(opts["device"]), int(opts["batch_size"]), float(opts["w"]))
        except ValueError as error:
            raise ValueError(f"channel kind 'clipscore': {error}") from None

    def setup(self) -> None:
        """Load the model (the reward actor calls this once, at start)."""
        self.scorer.load()

    def texts(self, batch: ScoringInput) -> list[str]:
        """(N,) the text each image is scored against."""
        if self.text_key is not None:
            return [str(md.get(self.text_key, "")) for md in batch.metadata]
        return list(batch.prompts if self.text == "prompt" else batch.completions)

    def __call__(self, batch: ScoringInput) -> list[float | None]:
        images = self.source.images(batch.completions, batch.metadata)
        return self.scorer.score(images, self.texts(batch))

    def reward_maps(self, batch: ScoringInput) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """(N,) (image (H, W, 3) uint8, map (H, W) in [0, 1]) with ``map_method``; None without an image."""
        from mixgrpo.rewards.maps import clip_map

        self.scorer.load()
        images = self.source.images(batch.completions, batch.metadata)
        return [None if image is None else (np.asarray(image), clip_map(self.scorer, image, text, self.map_method))
                for image, text in zip(images, self.texts(batch))]


@register("clipscore")
def clipscore_channel(options: dict[str, Any]) -> ClipScoreChannel:
    """CLIPScore channel (options: model, pretrained, image_key | render, text, text_key, device, batch_size, w)."""
    return ClipScoreChannel(options)
