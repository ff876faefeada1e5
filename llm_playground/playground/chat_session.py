"""The conversation the Chat tab holds: system prompt, turns, and the prompt ids for the next turn.

Plain data and one function; no widgets. The prompt goes through the model's own chat template
(model.chat_template.render_chat) when it has one; a model without a template gets a plain
"role: text" transcript. Special-token text produced by the template (e.g. <|im_start|>) is
encoded as special tokens; the same text typed in a message stays ordinary text
(model.chat_template.encode_chat). A system prompt of None means the model's own default: no
system message is sent and the template writes its default, as `playground generate --chat` does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

@dataclass
class Turn:
    """One message of the conversation: its role and text."""
    role: str        # "user" / "assistant"
    content: str


@dataclass
class Conversation:
    """The chat's system prompt (None: the template's default) and its turns."""
    system_prompt: str | None = None     # None: the template's default system prompt
    turns: list[Turn] = field(default_factory=list)

    def messages(self) -> list[dict[str, str]]:
        """The conversation as chat-template messages, a system message first when one is set."""
        system = self.system_prompt
        msgs = [{"role": "system", "content": system}] if system is not None and system.strip() else []
        return msgs + [{"role": t.role, "content": t.content} for t in self.turns]

    def prompt_text(self, chat_template: str | None) -> str:
        """The text the model sees before it writes the next assistant turn."""
        if chat_template:
            from llm_playground.model.engine.chat_template import render_chat
            return render_chat(chat_template, self.messages(), add_generation_prompt=True)
        lines = [f"{m['role']}: {m['content']}" for m in self.messages()]
        return "\n".join(lines) + "\nassistant:"

    def prompt_ids(self, tokenizer: Any, chat_template: str | None) -> list[int]:
        """The prompt ids for the next assistant turn (template specials as special tokens)."""
        if chat_template:
            from llm_playground.model.engine.chat_template import encode_chat
            return encode_chat(tokenizer, chat_template, self.messages())
        return tokenizer.encode_ordinary(self.prompt_text(None))

    def last_user_index(self) -> int | None:
        """The index of the last user turn, or None when there is none."""
        for i in range(len(self.turns) - 1, -1, -1):
            if self.turns[i].role == "user":
                return i
        return None

    def drop_after_last_user(self) -> None:
        """For regenerate: forget the assistant answer(s) after the last user turn."""
        i = self.last_user_index()
        if i is not None:
            del self.turns[i + 1:]
