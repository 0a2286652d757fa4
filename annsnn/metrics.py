"""Classification metrics from predictions: top-1, macro recall and F1, top-5, confusion matrix.

* top-1 = mean(pred == label).
* recall_macro = (1/|C|) Σ_c TP_c / (TP_c + FN_c), F1_macro = (1/|C|) Σ_c 2 TP_c / (2 TP_c + FP_c + FN_c),
  over the classes C that occur among the labels or the predictions (scikit-learn's
  ``average="macro"`` with ``zero_division=0``, the definition :mod:`annsnn.analyzer` uses).
* top-5 = share of samples whose label is among the 5 largest outputs; reported only when
  there are at least 10 classes (with fewer, top-5 is close to trivially 1).
* confusion[i][j] = number of samples with label i predicted as j, over all ``num_classes``.

scikit-learn does the counting: it is the reference implementation of these definitions.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

__all__ = ["ClassificationMetrics", "classification_metrics", "ranked_classes", "check_label_range", "TOP5_MIN_CLASSES"]

TOP5_MIN_CLASSES = 10


@dataclass
class ClassificationMetrics:
    """Scores of one network on one set of samples (fractions in [0, 1])."""

    top1: float
    recall_macro: float
    f1_macro: float
    top5: float | None  # None when there are fewer than TOP5_MIN_CLASSES classes
    confusion: list[list[int]]  # [label][prediction]

    def to_dict(self) -> dict:
        return asdict(self)


def check_label_range(labels: Tensor, classes: int) -> None:
    """Refuse labels outside ``0 .. classes-1`` (the model's outputs): data of another task,
    which would otherwise be scored as wrong answers, or fail inside a loss."""
    from .errors import UsageError

    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= int(classes)):
        raise UsageError(f"the data's labels run from {int(labels.min())} to {int(labels.max())}, but the model has {int(classes)} outputs: "
                         "is it the data the model was trained on (--data)?")


def classification_metrics(pred: Tensor, labels: Tensor, num_classes: int, top5: Tensor | None = None) -> ClassificationMetrics:
    """Metrics from predictions ``pred`` [N] (argmax, first index on ties), ``labels`` [N], and
    optionally the 5 best classes ``top5`` [N, 5] (:func:`ranked_classes`); top-5 is reported
    when ``top5`` is given and ``num_classes`` ≥ 10."""
    from sklearn.metrics import confusion_matrix, f1_score, recall_score

    if pred.dim() != 1 or labels.dim() != 1 or pred.shape[0] != labels.shape[0] or pred.shape[0] == 0:
        raise ValueError(f"predictions and labels must be non-empty 1-D tensors of equal length (one class index per sample); got {list(pred.shape)} and {list(labels.shape)}")
    pred = pred.long().cpu()
    y = labels.long().cpu()
    top5_score = None
    if top5 is not None and num_classes >= TOP5_MIN_CLASSES and top5.shape[1] >= 5:
        top5_score = int((top5[:, :5].cpu() == y.unsqueeze(1)).any(1).sum()) / len(y)
    yn, pn = y.numpy(), pred.numpy()
    confusion = confusion_matrix(yn, pn, labels=list(range(num_classes))).tolist()
    return ClassificationMetrics(
        top1=int((pred == y).sum()) / len(y),
        recall_macro=float(recall_score(yn, pn, average="macro", zero_division=0)),
        f1_macro=float(f1_score(yn, pn, average="macro", zero_division=0)),
        top5=top5_score,
        confusion=[[int(v) for v in row] for row in confusion],
    )


def ranked_classes(scores: Tensor, k: int = 5) -> Tensor:
    """The ``min(k, classes)`` best classes of each row of ``scores`` [N, classes], best first."""
    return torch.topk(scores, min(k, scores.shape[1]), dim=1).indices
