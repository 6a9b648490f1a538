"""Export a model for other runtimes: a Hugging Face safetensors folder, or a GGUF for
llama.cpp / Ollama with a ``Modelfile``. LoRA adapters are folded into the weights first
(:func:`cotune.lora.merge_lora`); a run folder, preset or weights path is loaded with
``cotune.load(spec)`` (:mod:`cotune.runs`) before it reaches :func:`export`.

=================  ======================================================================
``api``            :func:`export`: options, merge, staging, ``cotune_export.json``
``check``          :func:`check_export`: the written file generates what the model does
``hf_folder``      the Hugging Face ``Gemma3ForCausalLM`` folder
``gguf_file``      ``model.gguf``: llama.cpp metadata, vocabulary, float or q8_0 tensors
``templates``      Gemma's chat template and the Ollama ``Modelfile``
``vocab``          SentencePiece control pieces and the unknown piece
``options``        formats, dtypes, quantizations and the errors for asking wrongly
=================  ======================================================================
"""

from cotune.export.api import export
from cotune.export.check import CHECK_QUESTIONS, CHECK_TEXTS, check_export
from cotune.export.gguf_file import gguf_tensor_name
from cotune.export.options import (
    DTYPES,
    FORMATS,
    GGUF_NAME,
    QUANTS,
    DType,
    ExportError,
    Format,
    OutputExists,
    Quant,
)
from cotune.export.templates import chat_template, modelfile_text

__all__ = [
    "CHECK_QUESTIONS",
    "CHECK_TEXTS",
    "DTYPES",
    "FORMATS",
    "GGUF_NAME",
    "QUANTS",
    "DType",
    "ExportError",
    "Format",
    "OutputExists",
    "Quant",
    "chat_template",
    "check_export",
    "export",
    "gguf_tensor_name",
    "modelfile_text",
]
