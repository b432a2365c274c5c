"""text-classification: a text and a class per row, from CSV or JSONL.

A word-level tokenizer (the `tokenizers` library: Unicode-normalised, lower-cased, split on
whitespace and punctuation) is trained at prepare time on the train split only, and saved as
its JSON in the dataset version's manifest and in the model card: nothing is downloaded at run
time, and serving tokenizes exactly as training did. Id 0 is padding, id 1 an unknown word.

Prepared `x` holds each text's first `maxLength` token ids as float32 `[N, L, 1, 1]` (exact for
ids below 2^24), padded with 0 after the text, so the shared input pipeline, the ONNX check
and the serving backends stay one code path; the normalisation is the identity. The models
(`models/text.py`) mask the padding.

The builtin `sentiment` is generated here (no text data set ships offline): short reviews
whose class depends on word order, not only on which words occur ("not bad" is positive; after
"but" the second clause decides), so a bag of words cannot solve it and a sequence model can.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from tauon_runtime.contract import Columns, PrepareConfig
from tauon_runtime.data import sources
from tauon_runtime.data.sources import DataError, RawData

from . import source_file
from .tabular import class_order

PAD, UNK = "[PAD]", "[UNK]"
DEFAULT_MAX_LENGTH, DEFAULT_VOCAB = 64, 8000
MAX_TEXT_CHARS = 100_000  # one row's text; a longer one is refused, naming its line


# --- the tokenizer -------------------------------------------------------------------------------


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    tok = Tokenizer(WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    trainer = WordLevelTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK], min_frequency=1)
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id(PAD) == 0 and tok.token_to_id(UNK) == 1
    return tok


def load_tokenizer(serialized: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(serialized)


def encode(tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """Texts -> float32 [N, max_length] token ids, cut at max_length, padded with 0 after."""
    out = np.zeros((len(texts), max_length), dtype=np.float32)
    for i, enc in enumerate(tokenizer.encode_batch(list(texts), add_special_tokens=False)):
        ids = enc.ids[:max_length]
        out[i, : len(ids)] = ids
    return out


# --- reading -------------------------------------------------------------------------------------


def _table_file(path: Path) -> Path:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".jsonl"))
        if len(found) != 1:
            raise DataError(
                f"expected exactly one .csv or .jsonl file in {path}, found {len(found)}"
            )
        return found[0]
    return path


def _checked(text: Any, label: Any, where: str) -> tuple[str, str]:
    if not isinstance(text, str):
        raise DataError(f"{where}: the text must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise DataError(f"{where}: the text has {len(text)} characters; at most {MAX_TEXT_CHARS}")
    if isinstance(label, bool) or not isinstance(label, str | int):
        raise DataError(f"{where}: the label must be a string or an integer, got {label!r:.40}")
    return text, str(label).strip()


def read_table(path: Path, columns: Columns) -> RawData:
    """A CSV with a header row, or JSON Lines (one object per line): `columns.text` and
    `columns.label`."""
    path = _table_file(path)
    rows: list[tuple[str, str]] = []
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path.name} line {n}: not JSON ({e.msg})") from None
                if not isinstance(obj, dict) or columns.text not in obj or columns.label not in obj:
                    raise DataError(
                        f"{path.name} line {n}: needs the keys {columns.text!r} (columns.text) "
                        f"and {columns.label!r} (columns.label)"
                    )
                rows.append(
                    _checked(obj[columns.text], obj[columns.label], f"{path.name} line {n}")
                )
    else:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            for col, field in ((columns.text, "columns.text"), (columns.label, "columns.label")):
                if col not in header:
                    raise DataError(
                        f"{field} {col!r} is not a column of {path.name}; "
                        f"its columns are {', '.join(header[:20])}"
                    )
            t, lab = header.index(columns.text), header.index(columns.label)
            for n, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{path.name} line {n}: {len(row)} values, header has {len(header)}"
                    )
                rows.append(_checked(row[t], row[lab], f"{path.name} line {n}"))
    if not rows:
        raise DataError(f"{path.name}: no rows")
    names = class_order([label for _, label in rows])
    index = {name: i for i, name in enumerate(names)}
    x = np.array([text for text, _ in rows], dtype=object)
    return RawData(x, np.array([index[label] for _, label in rows], dtype=np.int64), names)


# --- the generated builtin -----------------------------------------------------------------------

_SUBJECTS = (
    "the food", "the service", "the staff", "the pizza", "the room", "the movie", "the coffee",
    "the hotel", "the book", "the music", "the waiter", "the price", "the view", "the app",
)  # fmt: skip
_GOOD = (
    "good", "great", "excellent", "wonderful", "delicious", "friendly", "lovely", "perfect",
    "fantastic", "pleasant", "superb", "amazing",
)  # fmt: skip
_BAD = (
    "bad", "terrible", "awful", "horrible", "bland", "rude", "disappointing", "poor",
    "mediocre", "dreadful", "boring", "slow",
)  # fmt: skip
_OPENERS = ("", "honestly ", "overall ", "to be fair ", "i think ", "we felt ")
_INTENSIFIERS = ("", "", "very ", "really ", "quite ", "so ")


def _clause(rng: np.random.Generator, positive: bool) -> str:
    """A clause meaning `positive`: an adjective of that polarity, or a negated opposite."""
    negated = rng.random() < 0.4
    words = _BAD if positive == negated else _GOOD
    adj = words[rng.integers(len(words))]
    subject = _SUBJECTS[rng.integers(len(_SUBJECTS))]
    if negated:
        return f"{subject} was not {adj}"
    return f"{subject} was {_INTENSIFIERS[rng.integers(len(_INTENSIFIERS))]}{adj}"


def builtin_sentiment(n: int = 3000, seed: int = 0) -> RawData:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        positive = bool(rng.random() < 0.5)
        opener = _OPENERS[rng.integers(len(_OPENERS))]
        if rng.random() < 0.35:  # the clause after "but" decides
            text = f"{opener}{_clause(rng, not positive)} but {_clause(rng, positive)}"
        else:
            text = opener + _clause(rng, positive)
        texts.append(text)
        labels.append(int(positive))
    return RawData(np.array(texts, dtype=object), np.array(labels, dtype=np.int64),
                   ["negative", "positive"])  # fmt: skip


# --- the task ------------------------------------------------------------------------------------


class TextClassification:
    name = "text-classification"

    def load_raw(self, cfg: PrepareConfig, work: Path) -> RawData:
        src = cfg.source
        if src.builtin is not None:
            return sources.first(builtin_sentiment(), src.builtin.limit)
        path = source_file(cfg, work, (".csv", ".jsonl"), "a CSV or JSONL file")
        return read_table(path, cfg.columns)

    def prepare(
        self, cfg: PrepareConfig, raw: RawData, index: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
        max_length = cfg.preprocessing.max_length or DEFAULT_MAX_LENGTH
        vocab = cfg.preprocessing.vocab_size or DEFAULT_VOCAB
        tokenizer = train_tokenizer([str(t) for t in raw.x[index["train"]]], vocab)
        xs = {
            s: np.ascontiguousarray(encode(tokenizer, list(raw.x[i]), max_length)[:, :, None, None])
            for s, i in index.items()
        }
        preprocessing = {
            "normalize": False,  # token ids are not scaled
            "maxLength": max_length,
            "scale": 1.0,
            "mean": [0.0] * max_length,
            "std": [1.0] * max_length,
        }
        extra = {"tokenizer": tokenizer.to_str(), "vocabSize": tokenizer.get_vocab_size()}
        return xs, preprocessing, extra

    def card_fields(self, manifest: dict[str, Any]) -> dict[str, Any]:
        pre = manifest["preprocessing"]
        return {
            "tokenizer": manifest["tokenizer"],
            "preprocessing": {k: pre[k] for k in ("maxLength", "scale", "mean", "std")},
        }

    def model_options(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return {"vocabSize": int(manifest["vocabSize"])}
