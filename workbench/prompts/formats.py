"""Prompt formats and rendering: how a conversation becomes the text the model reads.

CodeFuse-CodeLlama-34B was trained (codefuse-ai's MFTCoder) on turns written back to back, each a
role tag and its text, every bot turn closed by `</s>`, encoded without `<s>`. The other formats
in PROMPT_FORMATS are variants seen in the wild, kept so that a notebook can show, token by token,
how they differ from what the model saw. A conversation renders to labelled segments (role tag,
content, separator, eos); encoding and the token view work from the same segments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..cache import atomic_write_json, atomic_write_text
from ..errors import PromptError

EOS_TEXT = "</s>"
ROLES = ("system", "human", "bot")
ROLE_ALIASES = {"user": "human", "assistant": "bot"}  # the names most chat tools use

Message = Mapping[str, str]


# --- Formats -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptFormat:
    """How turns are written: a tag before each turn's text, and what goes between and after turns."""

    name: str
    description: str  # one sentence for a reader choosing or comparing formats
    system_tag: str
    human_tag: str
    bot_tag: str
    separator: str = ""  # between two turns, and before the bot tag of the generation prompt
    turn_end: str = ""  # after every turn (after the bot's </s>), the last one included
    eos_after_bot: bool = True  # every bot turn is closed with </s>
    human_newline: bool = False  # the human text gets a trailing "\n" when it has none

    def __post_init__(self):
        for field in ("name", "description", "system_tag", "human_tag", "bot_tag", "separator", "turn_end"):
            if not isinstance(getattr(self, field), str):
                raise PromptError(f"PromptFormat.{field} must be a string, got {getattr(self, field)!r}")
        if not self.name:
            raise PromptError("PromptFormat.name must not be empty")

    def tag(self, role: str) -> str:
        """The tag written before a turn of `role` (one of ROLES)."""
        return {"system": self.system_tag, "human": self.human_tag, "bot": self.bot_tag}[role]


def _codefuse_tag(role: str) -> str:
    return f"<|role_start|>{role}<|role_end|>"


def _mftcoder_v2_tag(role: str) -> str:
    return f"<s>{role}\n"


_CODEFUSE_TAGS = {f"{role}_tag": _codefuse_tag(role) for role in ROLES}

PROMPT_FORMATS: dict[str, PromptFormat] = {
    fmt.name: fmt
    for fmt in (
        PromptFormat(
            "codefuse",
            "As trained (MFTCoder): turns back to back, every bot turn closed by </s>, no <s>. Use this one.",
            **_CODEFUSE_TAGS,
        ),
        PromptFormat(
            "card",
            "The card's quick-start: like codefuse, but the human text gets a trailing newline.",
            **_CODEFUSE_TAGS,
            human_newline=True,
        ),
        PromptFormat(
            "card-diagram",
            "The card's format diagram: like codefuse, with a newline after every turn.",
            **_CODEFUSE_TAGS,
            turn_end="\n",
        ),
        PromptFormat(
            "newline",
            "The popular community template: like codefuse, with a newline between turns.",
            **_CODEFUSE_TAGS,
            separator="\n",
        ),
        PromptFormat(
            "mftcoder-v2",
            "Later MFTCoder releases (<s>human\\n ... <s>bot\\n); this model never saw it.",
            **{f"{role}_tag": _mftcoder_v2_tag(role) for role in ROLES},
            turn_end="\n",
        ),
        PromptFormat("raw", "No template: the turns' texts only, back to back.", "", "", "", eos_after_bot=False),
    )
}


def get_format(format: str | PromptFormat) -> PromptFormat:
    """The PromptFormat named `format` (a PromptFormat passes through)."""
    if isinstance(format, PromptFormat):
        return format
    try:
        return PROMPT_FORMATS[format]
    except (KeyError, TypeError):
        known = ", ".join(PROMPT_FORMATS)
        raise PromptError(f"Unknown prompt format {format!r}; known formats: {known}") from None


# --- Rendering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    kind: str  # role_tag, content, separator (text the format adds) or eos
    text: str
    role: str  # the role of the turn it belongs to (a separator belongs to the turn before it)
    turn: int  # index of that turn; the generation prompt's bot tag has index len(messages)


def _normalize_messages(messages: Sequence[Message]) -> list[tuple[str, str]]:
    """(role, content) pairs with aliases resolved; raises PromptError on anything else."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise PromptError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise PromptError(
            "The conversation is empty: pass at least one message, e.g. {'role': 'human', 'content': ...}"
        )
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise PromptError(f"Message {i} must be a dict with 'role' and 'content' keys, got {message!r}")
        role = ROLE_ALIASES.get(message["role"], message["role"])
        if role not in ROLES:
            raise PromptError(
                f"Message {i} has unknown role {message['role']!r}; allowed roles: {', '.join(ROLES)} "
                f"(or the aliases {', '.join(f'{a}={r}' for a, r in ROLE_ALIASES.items())})"
            )
        if role == "system" and i > 0:
            raise PromptError(f"Message {i} is a system message; a system message may only come first")
        if not isinstance(message["content"], str):
            raise PromptError(f"Message {i} content must be a string, got {type(message['content']).__name__}")
        turns.append((role, message["content"]))
    return turns


def render_segments(
    messages: Sequence[Message], format: str | PromptFormat, add_generation_prompt: bool
) -> list[Segment]:
    fmt = get_format(format)
    turns = _normalize_messages(messages)
    segments: list[Segment] = []

    def add(kind: str, text: str, role: str, turn: int) -> None:
        if text:
            segments.append(Segment(kind, text, role, turn))

    for turn, (role, content) in enumerate(turns):
        if turn > 0:
            add("separator", fmt.separator, turns[turn - 1][0], turn - 1)
        add("role_tag", fmt.tag(role), role, turn)
        add("content", content, role, turn)
        if role == "human" and fmt.human_newline and not content.endswith("\n"):
            add("separator", "\n", role, turn)
        if role == "bot" and fmt.eos_after_bot:
            add("eos", EOS_TEXT, role, turn)
        add("separator", fmt.turn_end, role, turn)
    if add_generation_prompt:
        add("separator", fmt.separator, turns[-1][0], len(turns) - 1)
        add("role_tag", fmt.bot_tag, "bot", len(turns))
    return segments


def render_prompt(
    messages: Sequence[Message], format: str | PromptFormat = "codefuse", add_generation_prompt: bool = True
) -> str:
    """The prompt text of a conversation in a format of PROMPT_FORMATS.

    messages: {"role": ..., "content": ...} dicts; roles system (first only), human, bot, or the
    aliases user and assistant. With add_generation_prompt the text ends with the bot tag, asking
    the model for the next bot turn.
    """
    return "".join(s.text for s in render_segments(messages, format, add_generation_prompt))


# The chat template's logic; chat_template() puts the format's settings in front of it.
_CHAT_TEMPLATE_BODY = r"""
{%- if not messages -%}{{ raise_exception('The conversation is empty.') }}{%- endif -%}
{%- for message in messages -%}
    {%- set role = aliases.get(message['role'], message['role']) -%}
    {%- if role not in tags -%}
        {{- raise_exception('Unknown role ' ~ message['role'] ~
                            '; allowed roles: system, human, bot (or user, assistant)') -}}
    {%- endif -%}
    {%- if role == 'system' and not loop.first -%}
        {{- raise_exception('A system message may only come first.') -}}
    {%- endif -%}
    {%- if not loop.first -%}{{ separator }}{%- endif -%}
    {{- tags[role] ~ message['content'] -}}
    {%- if human_newline and role == 'human' and message['content'][-1:] != '\n' -%}{{ '\n' }}{%- endif -%}
    {%- if eos_after_bot and role == 'bot' -%}{{ '</s>' }}{%- endif -%}
    {{- turn_end -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ separator ~ tags['bot'] }}{%- endif -%}
"""


def chat_template(format: str | PromptFormat = "codefuse") -> str:
    """A Jinja chat template that renders exactly as render_prompt does, for apply_chat_template."""
    fmt = get_format(format)
    settings = {
        "tags": {role: fmt.tag(role) for role in ROLES},
        "aliases": ROLE_ALIASES,
        "separator": fmt.separator,
        "turn_end": fmt.turn_end,
        "eos_after_bot": fmt.eos_after_bot,
        "human_newline": fmt.human_newline,
    }
    # JSON values are Jinja literals too (strings with their escapes, dicts, true/false)
    header = "".join(f"{{%- set {name} = {json.dumps(value)} -%}}\n" for name, value in settings.items())
    return f"{{#- CodeFuse Workbench prompt format {fmt.name} -#}}\n" + header + _CHAT_TEMPLATE_BODY.strip()


CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers (4.43+) reads a folder's template
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


def write_chat_template(folder: str | os.PathLike, format: str | PromptFormat = "codefuse") -> Path:
    """Write the format's chat template into a model folder, where tools that read one find it:
    `chat_template.jinja`, and the `chat_template` key of `tokenizer_config.json` when the folder
    has that file (older transformers read only the key). Returns the template file's path."""
    folder = Path(folder)
    template = chat_template(format)
    atomic_write_text(folder / CHAT_TEMPLATE_FILE, template + "\n")
    config_file = folder / TOKENIZER_CONFIG_FILE
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise PromptError(f"{config_file} does not hold a JSON object; cannot add the chat template to it")
        atomic_write_json(config_file, {**config, "chat_template": template})
    return folder / CHAT_TEMPLATE_FILE
