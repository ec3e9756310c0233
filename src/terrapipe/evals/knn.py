"""Weighted k-nearest-neighbour classification of frozen embeddings: OlmoEarth's kNN evaluation
(reference/olmoearth-behaviour.md 7, re-implemented from its description; the weighting is that of
Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018).

Embeddings are L2-normalised, so the similarity is the cosine; each query takes its k most similar
training rows, and each neighbour votes for its label with weight exp(sim / temperature). With
temperature 0.07 a neighbour at cosine 1.0 outweighs ~4 neighbours at 0.9: the nearest rows dominate,
unlike a plain majority vote.

- k larger than the number of training rows N uses all N rows (a smaller reference set is not an
  error: the label-fraction subsets of small tasks can be smaller than k = 20).
- Ties: in the vote, the lowest class index wins (torch.argmax returns the first maximum); in the
  neighbour ranking, torch.topk's order among equal similarities (fixed for given inputs).
- Float32 matmul is enough: cosines lie in [-1, 1] and float32 rounds them to ~1e-7 * sqrt(D), far below
  any gap that separates real neighbours. Weights are exp((sim - top sim) / temperature), the same vote
  up to one factor per query, so no temperature overflows float32 (exp(1 / 0.01) would).
- Queries are processed in chunks (1024 by default), so memory stays at chunk x N similarities however
  many queries there are. Torch on the CPU. The BLAS picks its kernel by matrix shape, so another chunk
  size can move a similarity by a float32 rounding step (~1e-7): scores then differ in their last bits
  and a prediction only on such a near-tie; the same inputs and chunk size repeat bit for bit.

Shapes: N training rows, Q queries, D embedding width, C classes, k neighbours.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from terrapipe.evals.metrics import to_numpy

QUERY_CHUNK = 1024
DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07


def _embeddings(values, name: str):
    import torch

    tensor = torch.as_tensor(to_numpy(values), dtype=torch.float32)
    if tensor.ndim != 2 or len(tensor) == 0:
        raise ValueError(f"{name} must be a non-empty [rows, D] array, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} holds non-finite values (first in row "
                         f"{int((~torch.isfinite(tensor)).any(dim=1).nonzero()[0])}); clean the embeddings first")
    return tensor


def _neighbours(train_emb, query_emb, k: int, temperature: float, query_chunk: int) -> Iterator[tuple]:
    """Yield (query slice, neighbour index [chunk, k'], vote weight [chunk, k']) per chunk of queries,
    k' = min(k, N)."""
    import torch
    import torch.nn.functional as F

    train, query = _embeddings(train_emb, "train_emb"), _embeddings(query_emb, "query_emb")
    if train.shape[1] != query.shape[1]:
        raise ValueError(f"train_emb has width {train.shape[1]} but query_emb has {query.shape[1]}")
    if k < 1 or not temperature > 0 or query_chunk < 1:
        raise ValueError(f"k ({k}) and query_chunk ({query_chunk}) must be >= 1 and temperature "
                         f"({temperature}) > 0")
    train, query = F.normalize(train, dim=1), F.normalize(query, dim=1)   # a zero row stays zero (cosine 0)
    k = min(k, len(train))
    for first in range(0, len(query), query_chunk):
        block = slice(first, first + query_chunk)
        similarity = query[block] @ train.T                              # (chunk, N) cosines
        top_sim, top_index = similarity.topk(k, dim=1)                   # (chunk, k') each
        yield block, top_index, torch.exp((top_sim - top_sim[:, :1]) / temperature)   # top_sim sorted: [:, 0] max


def _check_rows(labels_rows: int, train_rows: int, name: str) -> None:
    if labels_rows != train_rows:
        raise ValueError(f"{name} has {labels_rows} rows but train_emb has {train_rows}; they must align")


def knn_classify(train_emb, train_labels, query_emb, num_classes: int, k: int = DEFAULT_K,
                 temperature: float = DEFAULT_TEMPERATURE, *, query_chunk: int = QUERY_CHUNK,
                 return_scores: bool = False):
    """Predict each query's class by the exp(sim / temperature)-weighted vote of its k nearest rows.

    Args:
        train_emb [N, D], train_labels [N] integer classes in [0, C), query_emb [Q, D]; numpy or torch.
        num_classes: C. k: neighbours (min(k, N) used). temperature: vote sharpness.
        query_chunk: queries per similarity block (bounds memory; see the module docstring).
        return_scores: also return each class's share of the weighted vote.
    Returns: int64 numpy [Q] predictions, and with ``return_scores`` a float32 numpy [Q, C] vote share
    (rows sum to 1).
    """
    import torch

    labels = torch.as_tensor(to_numpy(train_labels))
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"train_labels must be an integer [N] vector, got {labels.dtype} {tuple(labels.shape)}")
    labels = labels.long()
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    _check_rows(len(labels), len(train_emb), "train_labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"train_labels must lie in [0, {num_classes}); drop ignored or unlabelled rows first")
    chunks = []
    for _, index, weight in _neighbours(train_emb, query_emb, k, temperature, query_chunk):
        votes = torch.zeros(len(index), num_classes, dtype=torch.float32)
        chunks.append(votes.scatter_add_(1, labels[index], weight))     # (chunk, C) weighted one-hot sums
    votes = torch.cat(chunks)                                            # (Q, C)
    pred = votes.argmax(dim=1).numpy().astype(np.int64)                 # first maximum: lowest class on ties
    if not return_scores:
        return pred
    return pred, (votes / votes.sum(dim=1, keepdim=True)).numpy()


def knn_multilabel(train_emb, train_multi_hot, query_emb, k: int = DEFAULT_K,
                   temperature: float = DEFAULT_TEMPERATURE, *, query_chunk: int = QUERY_CHUNK,
                   return_scores: bool = False):
    """One binary weighted kNN per class (OlmoEarth's multilabel kNN), over one shared neighbour set.

    Each class is predicted present when its positive neighbours carry more than half of the weighted
    vote; an exact half is a tie and goes to the lower class index, "absent" (0).

    Args: train_emb [N, D], train_multi_hot [N, C] (0/1 or bool), query_emb [Q, D]; k, temperature,
        query_chunk as ``knn_classify``.
    Returns: int64 numpy [Q, C] multi-hot predictions, and with ``return_scores`` the float32 [Q, C]
    positive share of each class's vote.
    """
    import torch

    targets = to_numpy(train_multi_hot)
    if targets.ndim != 2 or not np.isin(targets, (0, 1)).all():
        raise ValueError(f"train_multi_hot must be an [N, C] array of 0/1, got shape {targets.shape}")
    _check_rows(len(targets), len(train_emb), "train_multi_hot")
    targets = torch.from_numpy(targets.astype(np.float32))               # (N, C)
    shares = []
    for _, index, weight in _neighbours(train_emb, query_emb, k, temperature, query_chunk):
        positive = torch.einsum("qk,qkc->qc", weight, targets[index])  # (chunk, k) x (chunk, k, C) -> (chunk, C)
        shares.append(positive / weight.sum(dim=1, keepdim=True))
    share = torch.cat(shares)                                            # (Q, C)
    pred = (share > 0.5).numpy().astype(np.int64)
    return (pred, share.numpy()) if return_scores else pred
