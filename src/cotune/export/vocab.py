"""SentencePiece facts both writers need: which pieces are control tokens, and the id of
the unknown piece."""

from __future__ import annotations

from typing import Any


def special_pieces(tok: Any) -> dict[str, dict[str, Any]]:
    """``added_tokens_decoder`` entries for the control pieces (so HF splits them from text)."""
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2

    mp = spm_pb2.ModelProto()
    mp.ParseFromString(tok.model_proto)
    out = {}
    for i, p in enumerate(mp.pieces):
        if p.type in (
            spm_pb2.ModelProto.SentencePiece.CONTROL,
            spm_pb2.ModelProto.SentencePiece.UNKNOWN,
        ):
            out[str(i)] = {
                "content": p.piece,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
    return out


def unk_id(tok: Any) -> int:
    """The unknown piece's id. SentencePiece reports -1 when that piece is not typed UNKNOWN
    (the 270M GGUF types ``<unk>`` as CONTROL), so fall back to the trainer spec's id."""
    i = tok.sp.unk_id()
    if i >= 0:
        return int(i)
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2

    mp = spm_pb2.ModelProto()
    mp.ParseFromString(tok.model_proto)
    return int(mp.trainer_spec.unk_id)
