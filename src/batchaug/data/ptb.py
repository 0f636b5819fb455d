"""Penn Treebank, word level (Mikolov's 10k-word version), for the LSTM language-model experiments;
and any other word-level corpus laid out the same way.

Standard LM setup: each line is split on whitespace and ends with an ``<eos>`` token; the
vocabulary is built from the training text (10,000 types including ``<eos>`` and ``<unk>``); the
token stream of a split is cut into ``batch_size`` parallel columns (:func:`batchify`) and read in
windows of ``bptt`` steps (:func:`get_batch`), each target being the next token.

A corpus folder holds ``train``, ``valid`` and ``test`` as ``ptb.<split>.txt`` or ``<split>.txt``
(:func:`load_corpus`); a missing split, an empty file or a word of valid/test that the training text
never has is a :class:`~batchaug.errors.DataError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch

from batchaug.data.paths import resolve_data_path
from batchaug.errors import ConfigError, DataError

EOS = "<eos>"
UNK = "<unk>"
PTB_SPLITS = ("train", "valid", "test")


class Vocab:
    """Token <-> id mapping.

    Attributes:
        itos: id -> token.
        stoi: token -> id.
    """

    def __init__(self, itos: Iterable[str]) -> None:
        self.itos: list[str] = list(itos)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise DataError("vocabulary has duplicate tokens")

    @classmethod
    def build(cls, lines: Iterable[str], eos: str = EOS) -> Vocab:
        """Vocabulary of the whitespace tokens of ``lines`` plus ``eos``, in order of first appearance."""
        seen: dict[str, None] = {}
        for line in lines:
            seen.update(dict.fromkeys(line.split()))
            seen.setdefault(eos)
        return cls(seen)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    @property
    def eos_index(self) -> int:
        return self.stoi[EOS]

    def encode(self, tokens: Iterable[str], unk: str | None = UNK) -> torch.Tensor:
        """LongTensor of ids; unknown tokens become ``unk`` (an error when ``unk`` is None or absent)."""
        stoi = self.stoi
        unk_id = stoi.get(unk) if unk is not None else None
        if unk_id is None:
            try:
                ids = [stoi[t] for t in tokens]
            except KeyError as exc:
                raise DataError(f"token {exc.args[0]!r} is not in the vocabulary") from None
        else:
            ids = [stoi.get(t, unk_id) for t in tokens]
        return torch.tensor(ids, dtype=torch.int64)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> list[str]:
        """Tokens of a sequence of ids."""
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        return [self.itos[i] for i in ids]


class Corpus(Mapping[str, torch.Tensor]):
    """The token ids of each split (``corpus["train"]``, a 1-D LongTensor) and their :attr:`vocab`."""

    def __init__(self, vocab: Vocab, splits: dict[str, torch.Tensor]) -> None:
        self.vocab = vocab
        self._splits = dict(splits)

    def __getitem__(self, split: str) -> torch.Tensor:
        try:
            return self._splits[split]
        except KeyError:
            raise DataError(f"no PTB split {split!r}; available: {', '.join(self._splits)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._splits)

    def __len__(self) -> int:
        return len(self._splits)


_LAYOUT = "a corpus folder holds train, valid and test as ptb.<split>.txt or <split>.txt"


def split_file(folder: Path, split: str) -> Path:
    """The file of ``split`` in a corpus folder: ``ptb.<split>.txt`` or ``<split>.txt``; DataError when
    neither exists (named in the folder's own style: ``ptb.`` when its training file has the prefix)."""
    for name in (f"ptb.{split}.txt", f"{split}.txt"):
        if (folder / name).is_file():
            return folder / name
    plain = (folder / "train.txt").is_file() and not (folder / "ptb.train.txt").is_file()
    expected = folder / (f"{split}.txt" if plain else f"ptb.{split}.txt")
    raise DataError(f"{expected}: missing; {_LAYOUT}")


def _read_lines(file: Path) -> list[str]:
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{file}: missing; {_LAYOUT}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: cannot read as UTF-8 text ({exc})") from exc
    if not any(line.split() for line in lines):
        raise DataError(f"{file}: empty (no words); {_LAYOUT}")
    return lines


def tokenize(lines: Iterable[str]) -> list[str]:
    """Whitespace tokens of every line, each line followed by ``<eos>``."""
    tokens: list[str] = []
    for line in lines:
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def load_corpus(root: str | os.PathLike[str] | None = None, default_name: str = "ptb") -> Corpus:
    """Load a word-level corpus from a folder holding train, valid and test text (:func:`split_file`).

    ``root`` None searches ``$BATCHAUG_DATA/<default_name>`` then the cache directory. The vocabulary
    is built from the training split; a word of valid/test missing from it is an error naming the file
    and the word (PTB has none: its rare words are already ``<unk>``).
    """
    folder = resolve_data_path(root, default_name)
    if folder.is_file():
        raise DataError(f"{folder}: expected a folder; {_LAYOUT}")
    files = {s: split_file(folder, s) for s in PTB_SPLITS}
    lines = {s: _read_lines(files[s]) for s in PTB_SPLITS}
    vocab = Vocab.build(lines["train"])
    ids = {}
    for s in PTB_SPLITS:
        try:
            ids[s] = vocab.encode(tokenize(lines[s]), unk=None)
        except DataError as exc:
            raise DataError(f"{files[s]}: {exc} built from {files['train'].name}") from None
    return Corpus(vocab, ids)


def load_ptb(root: str | os.PathLike[str] | None = None) -> Corpus:
    """Load PTB from a folder holding ``ptb.{train,valid,test}.txt`` (:func:`load_corpus`; ``root``
    None searches ``$BATCHAUG_DATA/ptb`` then the cache directory)."""
    return load_corpus(root, "ptb")


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D token stream into ``batch_size`` contiguous columns: (T, B), T = len // B.

    Column ``b`` holds tokens ``[b*T, (b+1)*T)``; the ``len % B`` leftover tokens are dropped.
    """
    if ids.dim() != 1:
        raise ConfigError(f"batchify expects a 1-D token stream, got shape {tuple(ids.shape)}")
    if not 0 < batch_size <= len(ids):
        raise ConfigError(f"batch_size={batch_size}: must be between 1 and the {len(ids)} tokens")
    steps = len(ids) // batch_size
    return ids[: steps * batch_size].view(batch_size, steps).t().contiguous()


def get_batch(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The window of ``source`` (T, B) starting at row ``i``: inputs ``source[i:i+L]`` and targets
    ``source[i+1:i+1+L]`` with ``L = min(bptt, T - 1 - i)``."""
    if bptt < 1:
        raise ConfigError(f"bptt={bptt}: must be at least 1")
    if not 0 <= i < len(source) - 1:
        raise ConfigError(f"window start {i}: must be in 0..{len(source) - 2} for {len(source)} rows")
    length = min(bptt, len(source) - 1 - i)
    return source[i:i + length], source[i + 1:i + 1 + length]


def bptt_windows(source: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every :func:`get_batch` window of ``source`` in order (the last one may be shorter)."""
    for i in range(0, len(source) - 1, bptt):
        yield get_batch(source, i, bptt)
