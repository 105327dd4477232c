"""Error analysis on your own images: the images a model got wrong, most confident first, named by
their files, so that mislabelled or odd images in a folder dataset can be found and opened.

A run on a `folder:PATH` dataset writes mistakes.csv into its run directory after the test set is
evaluated (pipeline); `Run.mistakes()` reads it in a notebook, and `folder_mistakes`
(inference) does the same for any folder of class sub-folders a saved model is given. Columns:

    rank              1 = the mistake the model was most sure of
    path              the image file (absolute)
    index             its position in the run's test split (predictions.safetensors)
    true, predicted   class names
    confidence        the probability of the predicted class
    true_probability  the probability the model gave the true class
    top3              the three most probable classes: "cat 0.912; dog 0.051; fox 0.020"

Reading (read_mistakes, mistake_names) needs no model and no dataset: reports call it.
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

MISTAKES = "mistakes.csv"
COLUMNS = ("rank", "path", "index", "true", "predicted", "confidence", "true_probability", "top3")
TOP = 3
log = logging.getLogger(__name__)


def top_classes(probs: Sequence[float], classes: Sequence[str], k: int = TOP) -> str:
    """The k most probable classes with their probabilities: "7 0.912; 1 0.051; 9 0.020"."""
    ranked = sorted(range(len(probs)), key=lambda c: -float(probs[c]))[:k]
    return "; ".join(f"{classes[c]} {float(probs[c]):.3f}" for c in ranked)


def mistake_rows(probs: Any, labels: Any, classes: Sequence[str],
                 paths: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    """One row per wrongly classified image (COLUMNS), the most confident mistake first: the order
    of the report's mistakes grid (evaluate.confident_mistakes). probs: (N, K) probabilities,
    labels: (N,) true class indices, paths: each image's file (else "")."""
    import torch

    from .evaluate import confident_mistakes

    probs, labels = torch.as_tensor(probs, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.long)
    order = confident_mistakes(probs, labels, k=len(labels))
    rows = []
    for rank, i in enumerate(order, 1):
        p = probs[i].tolist()
        predicted = max(range(len(p)), key=lambda c: p[c])
        true = int(labels[i])
        rows.append({"rank": rank, "path": paths[i] if paths is not None else "", "index": i,
                     "true": classes[true], "predicted": classes[predicted], "confidence": p[predicted],
                     "true_probability": p[true], "top3": top_classes(p, classes)})
    return rows


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, **{k: f"{row[k]:.6f}" for k in ("confidence", "true_probability")}})
    return out.getvalue()


def read_mistakes(run_dir: str | Path) -> Optional[list[dict[str, Any]]]:
    """mistakes.csv as rows (numbers converted), or None when the run has none (not a folder
    dataset, or written before tinyvision wrote one)."""
    path = Path(run_dir) / MISTAKES
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["rank"], row["index"] = int(row["rank"]), int(row["index"])
        row["confidence"], row["true_probability"] = float(row["confidence"]), float(row["true_probability"])
    return rows


def mistake_names(run_dir: str | Path, positions: Sequence[int]) -> Optional[list[str]]:
    """The file name (no folders) of each test image at these positions, from mistakes.csv; None
    when the run has no mistakes.csv: the captions under the report's mistakes grid."""
    try:
        rows = read_mistakes(run_dir)
    except (OSError, ValueError, KeyError, csv.Error):
        return None
    if rows is None:
        return None
    by_index = {r["index"]: Path(r["path"]).name for r in rows if r.get("path")}
    return [by_index.get(int(i), "") for i in positions]


# -- a folder dataset's test files ------------------------------------------------------------------

def folder_root(dataset: str) -> Optional[Path]:
    """PATH of a `folder:PATH` dataset, else None."""
    kind, _, raw = dataset.partition(":")
    return Path(raw).expanduser() if kind == "folder" and raw else None


def _class_files(root: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(file, class index) in the order the folder loader reads them (data.formats.load_image_folder):
    class folders by name, files by name, image files only."""
    from .data.formats import is_image_file

    index = {c: i for i, c in enumerate(classes)}
    found = []
    for folder in sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir()):
        if folder.name not in index:
            continue  # a class folder without a readable image: not a class of the run
        found += [(p, index[folder.name]) for p in sorted(folder.iterdir())
                  if not p.name.startswith(".") and is_image_file(p) and p.is_file()]
    return found


def _readable(files: list[tuple[Path, int]], size: int, channels: int) -> list[tuple[Path, int]]:
    """The files the loader kept with skip_bad_images (those it can read)."""
    from .data.formats import read_image
    from .errors import DataError

    kept = []
    for path, label in files:
        try:
            read_image(path, (size, size), channels)
        except DataError:
            continue
        kept.append((path, label))
    return kept


def held_out_files(cfg: Any, classes: Sequence[str], labels: Sequence[int]) -> Optional[list[str]]:
    """The file of each test image of a folder-dataset run (absolute paths, in test-set order), or
    None when the dataset is not a folder or its files no longer match the run's test labels (the
    folder changed since): names are then left out rather than guessed."""
    from .data.catalog import _HOLDOUT_SEED, FOLDER_CHANNELS, FOLDER_IMAGE_SIZE, _carve  # the loader's own split

    root = folder_root(cfg.dataset)
    if root is None:
        return None
    split = (root / "train").is_dir() and (root / "test").is_dir()
    files = _class_files(root / "test" if split else root, classes)
    if cfg.skip_bad_images:
        files = _readable(files, cfg.image_size or FOLDER_IMAGE_SIZE, cfg.channels or FOLDER_CHANNELS)
    if not split and len(files) >= 3:
        test_idx, _ = _carve(len(files), max(1, round(0.2 * len(files))), _HOLDOUT_SEED, True)
        files = [files[i] for i in test_idx]
    if [label for _, label in files] != [int(y) for y in labels]:
        log.warning(f"{root}: its image files no longer match the run's test set; {MISTAKES} is written "
                    "without file names")
        return None
    return [str(path.absolute()) for path, _ in files]


def write_test_mistakes(run_dir: Optional[Path], pred: Any, cfg: Any, classes: Sequence[str]) -> Optional[Path]:
    """mistakes.csv for a folder-dataset run (after its test predictions); nothing for other
    datasets. A folder that cannot be listed again leaves the file without names, never the run
    failed."""
    from .files import atomic_write

    if run_dir is None or folder_root(cfg.dataset) is None:
        return None
    try:
        paths = held_out_files(cfg, classes, pred.labels.tolist())
    except OSError as exc:
        log.warning(f"{MISTAKES} without file names: {exc}")
        paths = None
    path = Path(run_dir) / MISTAKES
    atomic_write(path, to_csv(mistake_rows(pred.probs, pred.labels, classes, paths)))
    return path
