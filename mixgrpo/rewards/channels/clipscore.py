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

from typing import Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from mixgrpo.rewards.channels.base import ChannelOptionsError, ScoringInput, register
from mixgrpo.rewards.images import ImageOptions, ImageSource


class ClipScoreOptions(ImageOptions):
    model: str = "ViT-B-32"
    """open_clip model: a name (with pretrained), local-dir:PATH, hf-hub:ORG/REPO, builtin:tiny-clip or builtin:tiny-poster-clip."""
    pretrained: str | None = Field(default=None, validate_default=True)
    """open_clip pretrained tag (laion2b_s34b_b79k) or checkpoint file; required for a plain model name."""
    device: str = "auto"
    """auto (the actor's GPU when it has one), cpu or cuda."""
    batch_size: int = Field(default=32, ge=1)
    """Images per forward pass."""
    w: float = Field(default=2.5, gt=0)
    """CLIPScore rescale w in w * max(cos, 0) (Hessel et al. 2021 use 2.5)."""
    text: Literal["prompt", "completion"] | None = None
    """Text scored against the image (None: prompt when rendering the completion, else the completion)."""
    text_key: str | None = None
    """Take the text from this prompt-metadata column instead."""
    map_method: Literal["gradcam", "attention", "gradient"] = "gradcam"
    """Dense reward map of reward_maps (rewards overlays, mixgrpo explain)."""

    @field_validator("pretrained")
    @classmethod
    def _named_model_needs_weights(cls, pretrained: str | None, info: ValidationInfo) -> str | None:
        model = info.data.get("model", "")
        if pretrained is None and not model.startswith(("builtin:", "local-dir:", "hf-hub:")):
            raise ValueError(f"model {model!r} needs options.pretrained (a tag such as laion2b_s34b_b79k, "
                             "or a checkpoint file)")
        return pretrained


class ClipScoreChannel:
    """CLIPScore for a batch; ``reward_maps`` explains it with a dense map per completion."""

    def __init__(self, options: ClipScoreOptions) -> None:
        from mixgrpo.rewards.clip_model import ClipScorer  # torch: only in processes that score CLIP

        self.source = ImageSource(options)
        self.text = options.text or ("prompt" if options.render else "completion")
        self.text_key, self.map_method = options.text_key, options.map_method
        try:
            self.scorer = ClipScorer(options.model, options.pretrained, options.device, options.batch_size, options.w)
        except ValueError as error:
            raise ChannelOptionsError.of("model", str(error)) from None

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


@register("clipscore", ClipScoreOptions)
def clipscore_channel(options: ClipScoreOptions) -> ClipScoreChannel:
    """CLIPScore channel of an image (the prompt's or the rendered completion) against a text."""
    return ClipScoreChannel(options)
