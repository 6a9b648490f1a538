"""The Gemma tokenizer: SentencePiece, with chat control tokens inserted as ids.

Gemma's control pieces (``<start_of_turn>``, ``<end_of_turn>``) are never parsed from
text by SentencePiece, so a prompt is built from :mod:`cotune.format` segments: text is
encoded, :class:`~cotune.format.Control` markers become their ids. Exactly one BOS is
added, by us, never by the encoder (Tunix's adapter adds a second one: see the notes).
"""

from __future__ import annotations

from pathlib import Path

import sentencepiece as spm

from cotune.format import END_OF_TURN, START_OF_TURN, Control, Segment

ASSETS = Path(__file__).resolve().parent.parent / "assets"


class Tokenizer:
    """A SentencePiece model plus the ids that generation and training care about."""

    def __init__(self, model_proto: bytes) -> None:
        self.sp = spm.SentencePieceProcessor()
        self.sp.LoadFromSerializedProto(model_proto)
        self.model_proto = model_proto
        self.bos_id: int = self.sp.bos_id()
        self.eos_id: int = self.sp.eos_id()
        self.pad_id: int = max(self.sp.pad_id(), 0)
        self.start_of_turn_id = self._control_id(START_OF_TURN)
        self.end_of_turn_id = self._control_id(END_OF_TURN)

    def _control_id(self, c: Control) -> int:
        i = self.sp.piece_to_id(c.piece)
        if i == self.sp.unk_id():
            raise ValueError(f"tokenizer has no control piece {c.piece!r}")
        return i

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: tokenizer model not found")
        return cls(p.read_bytes())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def end_ids(self) -> tuple[int, ...]:
        """Both ``<eos>`` and ``<end_of_turn>`` end a generation."""
        return (self.eos_id, self.end_of_turn_id)

    def encode(self, text: str) -> list[int]:
        """Plain text to ids: no BOS, no EOS, control-looking text stays text."""
        return list(self.sp.encode(text, out_type=int))

    def encode_segments(self, segments: list[Segment], add_bos: bool = True) -> list[int]:
        ids = [self.bos_id] if add_bos else []
        for s in segments:
            if isinstance(s, Control):
                ids.append(self._control_id(s))
            elif s:
                ids.extend(self.encode(s))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Ids to text, dropping BOS/EOS/pad and control tokens."""
        skip = {self.bos_id, self.eos_id, self.pad_id, self.start_of_turn_id, self.end_of_turn_id}
        return self.sp.decode([int(i) for i in ids if int(i) not in skip])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))


def tiny_tokenizer() -> Tokenizer:
    """A 512-piece Gemma-style tokenizer shipped with cotune for tiny test models."""
    return Tokenizer.from_file(ASSETS / "tiny_tokenizer.model")
