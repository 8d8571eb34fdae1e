"""A small stand-in for umT5's tokenizer.json: the tests' tiny umT5 files and the start-up bench's
full-size random layout (tools/startup_bench) both need a tokenizer with umT5's special ids and
post-processor, and the real one cannot be fetched there."""

from __future__ import annotations

import string
from pathlib import Path

WORDS = ["red", "fox", "snow", "city", "neon", "night", "rain", "cafe", "water", "colour", "painting", "in", "the", "at"]


def write_tokenizer(path: Path) -> int:
    """A small Unigram tokenizer.json shaped like umT5's: <pad> 0, </s> 1, <unk> 2, Metaspace, and a
    post-processor that appends </s> (as the real file's does). Returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    chars = list(string.ascii_lowercase + string.digits + "&<>;.,!?'é-")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -3.0) for c in chars] + [("▁" + w, -1.0) for w in WORDS]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return len(vocab)
