"""The conversation the Chat tab holds: system prompt, turns, and the prompt ids for the next turn.

Plain data and one function; no widgets. The prompt goes through the model's own chat template
(model.chat_template.render_chat) when it has one; a model without a template gets a plain
"role: text" transcript. Special-token text produced by the template (e.g. <|im_start|>) is
encoded as special tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass
class Turn:
    role: str        # "user" / "assistant"
    content: str


@dataclass
class Conversation:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    turns: list[Turn] = field(default_factory=list)

    def messages(self) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt.strip() else []
        return msgs + [{"role": t.role, "content": t.content} for t in self.turns]

    def prompt_text(self, chat_template: str | None) -> str:
        """The text the model sees before it writes the next assistant turn."""
        if chat_template:
            from model.chat_template import render_chat
            return render_chat(chat_template, self.messages(), add_generation_prompt=True)
        lines = [f"{m['role']}: {m['content']}" for m in self.messages()]
        return "\n".join(lines) + "\nassistant:"

    def prompt_ids(self, tokenizer: Any, chat_template: str | None) -> list[int]:
        return tokenizer.encode(self.prompt_text(chat_template), allowed_special="all")

    def last_user_index(self) -> int | None:
        for i in range(len(self.turns) - 1, -1, -1):
            if self.turns[i].role == "user":
                return i
        return None

    def drop_after_last_user(self) -> None:
        """For regenerate: forget the assistant answer(s) after the last user turn."""
        i = self.last_user_index()
        if i is not None:
            del self.turns[i + 1:]
