"""The classifiers of ``conceptkit eval``: one computation for every row, so rows differ only in their features.

In: feature matrices (concept scores, or raw embeddings for the black box) of train and test items, labels as
class indices. Out: accuracies (few-shot over seeds, all-data), the sparse model's weights at a fixed number of
effective concepts (NEC), predictions for the confusion matrix. Pure numpy / scikit-learn; no files.

- Features are standardised with the mean and standard deviation of the whole train split (no labels involved),
  then every model is ``LogisticRegression(C=1)`` (multinomial, lbfgs): the bottleneck of LaBo / LF-CBM style
  evaluations and the black box alike.
- Few-shot: ``shots`` labelled items per class drawn from the train split with a seeded generator; a class with
  fewer train items than ``shots`` makes that row skipped (with a note), never padded.
- Sparse (Label-free CBM's sparse final layer; VLG-CBM's fair comparison): an L1 path over C; the model kept is the
  densest whose number of effective concepts per class (non-zero weights / classes) is at most ``nec``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SHOTS = (1, 2, 4, 8, 16)


@dataclass
class Row:
    """One line of eval.json's ``results``."""

    model: str
    shots: int | str
    accuracy_mean: float
    accuracy_sd: float
    seeds: int
    n_features: int
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        def number(x: float) -> float | None:  # a skipped row has no accuracy: null in JSON, never NaN
            return None if x != x else round(x, 4)

        out = {"model": self.model, "shots": self.shots, "accuracy_mean": number(self.accuracy_mean),
               "accuracy_sd": number(self.accuracy_sd), "seeds": self.seeds, "n_features": self.n_features}
        if self.notes:
            out["notes"] = self.notes
        out.update(self.extra)
        return out


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean = train.mean(axis=0, dtype=np.float64)
    sd = train.std(axis=0, dtype=np.float64)
    sd[sd < 1e-8] = 1.0
    return [((x - mean) / sd).astype(np.float32) for x in (train, *others)]


def _classifier(c: float = 1.0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=1000)


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Predicted class indices of ``x_test``; with a single class in ``y_train`` that class (nothing to learn)."""
    classes = np.unique(y_train)
    if len(classes) == 1:
        return np.full(len(x_test), classes[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny few-shot sets
        model = _classifier().fit(x_train, y_train)
    return model.predict(x_test)


def few_shot_indices(y_train: np.ndarray, n_classes: int, shots: int, seed: int) -> np.ndarray | None:
    """``shots`` train indices per class (seeded); None when some class has fewer train items than ``shots``."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(n_classes):
        pool = np.flatnonzero(y_train == c)
        if len(pool) < shots:
            return None
        picked.append(rng.choice(pool, size=shots, replace=False))
    return np.concatenate(picked)


def few_shot_rows(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                  *, n_classes: int, shots: Sequence[int] = SHOTS, seeds: int = 10,
                  all_data: bool = True) -> list[Row]:
    """Few-shot rows (mean and sd over ``seeds``) and the all-data row for one feature set."""
    x_train, x_test = standardise(x_train, x_test)
    rows = []
    for k in shots:
        accs = []
        for seed in range(seeds):
            idx = few_shot_indices(y_train, n_classes, k, seed)
            if idx is None:
                break
            accs.append(float(np.mean(fit_predict(x_train[idx], y_train[idx], x_test) == y_test)))
        if not accs:
            smallest = int(np.bincount(y_train, minlength=n_classes).min())
            rows.append(Row(name, k, float("nan"), float("nan"), 0, x_train.shape[1],
                            notes=[f"skipped: a class has {smallest} train items, fewer than {k} shots"]))
            continue
        rows.append(Row(name, k, float(np.mean(accs)), float(np.std(accs)), len(accs), x_train.shape[1]))
    if all_data:
        acc = float(np.mean(fit_predict(x_train, y_train, x_test) == y_test))
        rows.append(Row(name, "all", acc, 0.0, 1, x_train.shape[1]))
    return rows


C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def tuned_c(x_train: np.ndarray, y_train: np.ndarray, grid: Sequence[float] = C_GRID, *, seed: int = 0
            ) -> tuple[float, float] | None:
    """(C, validation accuracy): the C of ``grid`` whose model, fitted on four fifths of the train items
    (stratified, seeded) and standardised with their statistics, is most accurate on the other fifth; ties go to the
    stronger regularisation. None when a class has fewer than 5 train items (no stratified fifth)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    present, counts = np.unique(y_train, return_counts=True)
    if len(present) < 2 or counts.min() < 5:
        return None
    fit, val = train_test_split(np.arange(len(y_train)), test_size=0.2, stratify=y_train, random_state=seed)
    a, b = standardise(x_train[fit], x_train[val])
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in grid:
            scores[c] = float(np.mean(LogisticRegression(C=c, max_iter=2000).fit(a, y_train[fit]).predict(b) == y_train[val]))
    best = max(grid, key=lambda c: (scores[c], -c))
    return best, scores[best]


def tuned_row(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              grid: Sequence[float] = C_GRID) -> Row:
    """The all-data row with C chosen on the train split (``tuned_c``; the test items are not consulted), refitted
    on all train items at that C."""
    from sklearn.linear_model import LogisticRegression

    chosen = tuned_c(x_train, y_train, grid)
    if chosen is None:
        return Row(name, "all", float("nan"), float("nan"), 0, x_train.shape[1],
                   notes=["skipped: a class has fewer than 5 train items to hold a validation fifth out"])
    c, validation = chosen
    a, b = standardise(x_train, x_test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        accuracy = float(np.mean(LogisticRegression(C=c, max_iter=2000).fit(a, y_train).predict(b) == y_test))
    return Row(name, "all", accuracy, 0.0, 1, x_train.shape[1], extra={"C": c, "validation_accuracy": round(validation, 4)})


@dataclass
class SparseModel:
    accuracy: float
    nec: float  # effective concepts per class actually reached
    c: float
    weights: np.ndarray  # (classes, features)
    intercept: np.ndarray
    predictions: np.ndarray


def sparse_model(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
                 n_classes: int, nec: int = 5) -> SparseModel:
    """The densest L1 logistic regression (one-vs-rest, one liblinear fit per class) with at most ``nec`` non-zero
    weights per class on average, along a path of C values."""
    from sklearn.linear_model import LogisticRegression

    x_train, x_test = standardise(x_train, x_test)
    best = None
    for c in np.logspace(-3, 1, 13):
        coef = np.zeros((n_classes, x_train.shape[1]), dtype=np.float64)
        intercept = np.full(n_classes, -np.inf)
        for k in range(n_classes):
            target = (y_train == k).astype(np.int64)
            if target.min() == target.max():  # a class absent from (or alone in) the train split
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = LogisticRegression(penalty="l1", solver="liblinear", C=float(c), max_iter=500).fit(x_train, target)
            coef[k], intercept[k] = fit.coef_[0], fit.intercept_[0]
        reached = np.count_nonzero(coef) / n_classes
        if reached > nec and best is not None:
            break
        predictions = np.argmax(x_test @ coef.T + intercept, axis=1)
        best = SparseModel(float(np.mean(predictions == y_test)), reached, float(c), coef, intercept, predictions)
        if reached > nec:
            break
    assert best is not None
    return best


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (y_true, y_pred), 1)
    return out


def zero_shot(item_embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """Nearest class-name embedding (cosine; both unit-norm)."""
    return np.argmax(item_embeddings @ class_embeddings.T, axis=1)
