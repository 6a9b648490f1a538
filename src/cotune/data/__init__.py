"""cotune's data layer: canonical records, verified generators, importers, cleaning,
splits and mixtures.

    from cotune import data
    recs = data.generate(["arithmetic", "word_problems"], n=1000, seed=0)
    gsm = data.import_file("gsm8k", "train.jsonl")
    kept, report = data.clean(gsm, exclude=data.import_file("gsm8k", "test.jsonl"))
    parts = data.split(kept, (0.9, 0.05, 0.05))
"""

from cotune.data.clean import (
    Report,
    answer_consistent,
    clean,
    estimate_tokens,
    normalize_text,
    question_key,
    split,
)
from cotune.data.generators import (
    GROUPS,
    TASKS,
    GenerationError,
    generate,
    iter_generate,
    resolve_tasks,
    verify_problem,
)
from cotune.data.importers import IMPORTERS, import_file
from cotune.data.mix import mix
from cotune.data.records import (
    DataError,
    Record,
    Reject,
    read_jsonl,
    record_from_dict,
    rejects_path,
    write_jsonl,
    write_rejects,
)

__all__ = [
    "GROUPS",
    "IMPORTERS",
    "TASKS",
    "DataError",
    "GenerationError",
    "Record",
    "Reject",
    "Report",
    "answer_consistent",
    "clean",
    "estimate_tokens",
    "generate",
    "import_file",
    "iter_generate",
    "mix",
    "normalize_text",
    "question_key",
    "read_jsonl",
    "record_from_dict",
    "rejects_path",
    "resolve_tasks",
    "split",
    "verify_problem",
    "write_jsonl",
    "write_rejects",
]
