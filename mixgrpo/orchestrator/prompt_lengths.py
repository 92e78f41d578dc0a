"""The run's task with its prompts fitted to the model's context, using the model's own tokenizer."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedTokenizerBase

from mixgrpo.actors.models import encode_prompts, load_tokenizer
from mixgrpo.builtin import resolve_model_path
from mixgrpo.builtin.tiny_clip import resolve_clip_name
from mixgrpo.config import Config
from mixgrpo.errors import InputError
from mixgrpo.tasks import Task, make_task


class TokenizerPromptTokens:
    """PromptTokens of a HF tokenizer, encoding exactly as the generators do (``encode_prompts``)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, chat_template: str) -> None:
        self.tokenizer, self.chat_template = tokenizer, chat_template

    def count(self, prompts: list[str]) -> list[int]:
        """Tokens of each prompt, chat template (or BOS) included."""
        return [len(ids) for ids in encode_prompts(self.tokenizer, prompts, self.chat_template)]

    def keep_last(self, prompt: str, tokens: int) -> str:
        """The prompt cut on the left (at a token boundary) until it fits in ``tokens``."""
        ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        overhead = self.count([prompt])[0] - len(ids)  # template or BOS tokens around the text
        keep = tokens - overhead
        while keep > 0:
            text = self.tokenizer.decode(ids[-keep:], skip_special_tokens=True)
            if self.count([text])[0] <= tokens:  # re-encoding at the cut may merge differently
                return text
            keep -= 1
        raise InputError(f"task.max_prompt_tokens={tokens} leaves no room for prompt text after the "
                         f"{overhead} tokens of the chat template")


def context_limit(model_path: str, max_new_tokens: int) -> int | None:
    """The model's context (max_position_embeddings) minus the completion budget; None when not declared."""
    context = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)
    if context is None:
        return None
    if context <= max_new_tokens:
        raise InputError(f"generator.max_new_tokens={max_new_tokens} leaves no room for a prompt in the "
                         f"model's context of {context} tokens")
    return context - max_new_tokens


def load_task(config: Config) -> Task:
    """The configured task, prompts over task.max_prompt_tokens handled per task.overlong_prompts.

    Builds a builtin model first (its tokenizer is part of it); raises InputError for a bad fit.
    model.kind=clip: nothing to fit (the policy never reads prompt text); a builtin CLIP is built here.
    """
    if config.model.kind == "clip":
        resolve_clip_name(config.model.path)
        return make_task(config.task, config.run.seed)
    model_path = resolve_model_path(config.model.path, config.run.seed)
    tokens = TokenizerPromptTokens(load_tokenizer(model_path), config.model.chat_template)
    limit = None if config.task.max_prompt_tokens else context_limit(model_path, config.generator.max_new_tokens)
    return make_task(config.task, config.run.seed, tokens, limit)
