"""The prompt other runtimes get: Gemma 3's chat template (HF folder and GGUF) and an Ollama
``Modelfile`` carrying cotune's reasoning instruction and stop strings, so an exported
model is prompted exactly as cotune trained and evaluated it."""

from __future__ import annotations

import json

from cotune import format as fmt
from cotune.export.options import GGUF_NAME

# Gemma 3's chat template, text only: a system message is prepended to the first user turn
# (Gemma has no system role), "assistant" is spelled "model".
_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] | trim + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def chat_template() -> str:
    """The Jinja chat template written to ``tokenizer_config.json`` and the GGUF.

    With ``system = cotune.format.INSTRUCTIONS[schema]`` and user content
    ``"Question: ..."`` it renders exactly cotune's ``chat`` prompt.
    """
    return _CHAT_TEMPLATE


def modelfile_text(gguf_name: str = GGUF_NAME, schema: fmt.Schema = "tags") -> str:
    """An Ollama ``Modelfile``: Gemma turns, cotune's instruction as SYSTEM, stop strings.

    ``ollama run`` then sends ``<instruction>\\n\\nQuestion: <prompt>`` exactly as cotune
    trains and evaluates (one BOS from the GGUF's ``add_bos_token``).
    """
    instr = fmt.INSTRUCTIONS[schema]
    template = (
        "<start_of_turn>user\n"
        "{{ if .System }}{{ .System }}\n\n{{ end }}Question: {{ .Prompt }}<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    stops = [fmt.END_OF_TURN.piece, *fmt.stop_strings(schema)]
    lines = [
        "# Ollama Modelfile written by `cotune export`: `ollama create NAME -f Modelfile`",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template}"""',
        f'SYSTEM """{instr}"""',
        *(f"PARAMETER stop {json.dumps(s)}" for s in stops),
        "PARAMETER temperature 0",
        "",
    ]
    return "\n".join(lines)
