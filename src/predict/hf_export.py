"""A run as a Hugging Face-style model folder (``inference.py --run RUN --export-hf DIR``):
model.safetensors and config.json that timm loads (timm_export.py), a README.md model card written
from the run's own files, and the run's curves figure beside it.

    timm.create_model("local-dir:DIR", pretrained=True)         # loads it
    huggingface_hub.upload_folder(repo_id="USER/NAME", folder_path="DIR")   # shares it

The card says what the run folder says (summary.json, model.json, .hydra/, metrics_per_class.csv,
metrics.csv) and nothing it does not.
"""

from __future__ import annotations

import math
import shlex
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from src.contract import RunPaths, Status
from src.fileio import atomic_write
from src.model.views import CARD_KEY
from src.predict.timm_export import TIMM_ARCHITECTURE, export_for_timm
from src.report.compare import SUMMARY_AVERAGES, flat_config, run_overrides
from src.runs.catalogue import Run

CURVES = "curves.png"
FRONT_MATTER = """---
library_name: timm
pipeline_tag: image-classification
tags:
- image-classification
- timm
- vision-transformer
metrics:
- accuracy
- f1
---
"""
# The settings of the recipe table, in the order shown, with their names in the card.
RECIPE = [
    ("trainer.epochs", "epochs"),
    ("trainer.batch_size", "batch size"),
    ("optimizer._target_", "optimizer"),
    ("optimizer.lr", "learning rate"),
    ("optimizer.weight_decay", "weight decay"),
    ("scheduler._target_", "schedule"),
    ("scheduler.warmup_epochs", "warmup epochs"),
    ("scheduler.min_lr", "final learning rate"),
    ("trainer.label_smoothing", "label smoothing"),
    ("trainer.grad_clip", "gradient clipping (norm)"),
    ("trainer.ema", "EMA of weights"),
    ("model.drop_path_rate", "drop path"),
    ("augment.randaugment_ops", "RandAugment ops"),
    ("augment.mixup_alpha", "mixup alpha"),
    ("augment.cutmix_alpha", "cutmix alpha"),
    ("augment.random_erasing", "random erasing"),
    ("seed", "seed"),
]


def export_hf(run: Run, out: Path) -> list[Path]:
    """model.safetensors, config.json, README.md and curves.png (when the run has curves) in
    ``out``; returns the files written."""
    export_for_timm(run.path, out)
    written = [out / "model.safetensors", out / "config.json"]
    curves = copy_curves(run, out / CURVES)
    if curves:
        written.append(curves)
    card = model_card(run, str(out), curves is not None)
    atomic_write(out / "README.md", lambda tmp: tmp.write_text(card))
    return [*written, out / "README.md"]


def copy_curves(run: Run, target: Path) -> Path | None:
    """The run's plots/curves.png, or one drawn from its metrics.csv; None without epochs."""
    drawn = RunPaths(run.path).plots / CURVES
    if drawn.is_file():
        shutil.copyfile(drawn, target)
        return target
    try:
        metrics = pd.read_csv(RunPaths(run.path).metrics)
    except (OSError, ValueError):
        return None
    if metrics.empty:
        return None
    from src.report.plots import plot_curves, write_png  # matplotlib, only when drawing

    fig = plot_curves(
        metrics, f"{run.summary.get('model', '')} on {run.summary.get('dataset', '')}"
    )
    write_png(fig, target, dpi=110)
    return target


def model_card(run: Run, folder: str, with_curves: bool) -> str:
    """The README.md: what the model is and how to load it, its data, recipe and command, its
    results with the per-class table and curves, and its limitations."""
    notes: list[str] = []
    config = flat_config(run, notes)
    sections = [
        FRONT_MATTER,
        introduction(run),
        usage(folder, run.card),
        data_section(run, config),
        recipe_section(run, config),
        results_section(run, with_curves),
        limitations(run),
    ]
    return "\n".join(section.rstrip() + "\n" for section in sections)


def introduction(run: Run) -> str:
    s, card = run.summary, run.card
    m = card["model"]
    classes = card["class_names"]
    start = "fine-tuned from " + str(s["pretrained"].get("source")) if s.get("pretrained") else ""
    patch, size = m["patch_size"], card["image_size"]
    what = (
        f"A Vision Transformer ({_plural(m['depth'], 'block')} of width {m['embed_dim']}, "
        f"{m['num_heads']} heads, {patch}x{patch} patches of a {size}x{size} image, "
        f"{_count(s.get('num_params') or card.get('num_params'))} parameters), trained "
        f"{start or 'from scratch'} on **{card['dataset']}** with the ViT "
        f"workbench. It sorts {_channels(card['channels'])} images into {len(classes)} classes: "
        f"{_listed(classes)}."
    )
    if isinstance(s.get("test_acc"), (int, float)):
        images = (s.get("split_sizes") or {}).get("test")
        what += f" Test accuracy: **{s['test_acc']:.2%}**" + (
            f" on {images:,} held-out images." if images else "."
        )
    return f"# {card['model_name']} on {card['dataset']}\n\n{what}"


def usage(folder: str, card: dict[str, Any]) -> str:
    mode = "L" if card["channels"] == 1 else "RGB"
    return f"""## Use it

```python
import timm, torch
from PIL import Image

model = timm.create_model("local-dir:{folder}", pretrained=True).eval()
# once uploaded: timm.create_model("hf-hub:USER/NAME", pretrained=True)
config = timm.data.resolve_data_config({{}}, model=model)  # size, mean/std from config.json
transform = timm.data.create_transform(**config)
image = Image.open("photo.png").convert("{mode}")
with torch.no_grad():
    probabilities = model(transform(image).unsqueeze(0)).softmax(-1)[0]
print(model.pretrained_cfg["label_names"][probabilities.argmax()])
```

timm builds it as a `VisionTransformer` (config.json: `architecture` {TIMM_ARCHITECTURE} names the
builder, `model_args` set every size). The workbench itself predicts with
`python inference.py --run RUN_FOLDER --images photo.png`.
"""


def data_section(run: Run, config: dict[str, Any]) -> str:
    card, s = run.card, run.summary
    where = [str(config[k]) for k in ("dataset.source", "dataset.root") if config.get(k)]
    where = [w for w in where if w != card["dataset"]]
    lines = ["## Training data", "", f"- dataset: **{card['dataset']}**"]
    if where:
        lines[-1] += " (" + ", ".join(f"`{w}`" for w in where) + ")"
    sizes = s.get("split_sizes") or {}
    if sizes:
        seed = config.get("dataset.split_seed")
        lines.append(
            "- splits: "
            + ", ".join(f"{n:,} {name}" for name, n in sizes.items())
            + " images"
            + (f" (split seed {seed})" if seed is not None else "")
        )
    raw, size = config.get("dataset.image_size"), card["image_size"]
    resized = f"{raw}x{raw} px resized to " if raw and raw != size else ""
    lines.append(
        f"- input: {_channels(card['channels'])}, {resized}{size}x{size} (bilinear, whole image), "
        f"normalised with mean {_floats(card['mean'])} and std {_floats(card['std'])}"
    )
    return "\n".join(lines)


def recipe_section(run: Run, config: dict[str, Any]) -> str:
    s = run.summary
    rows = [(name, _value(key, config[key])) for key, name in RECIPE if key in config]
    rows += [
        (name, str(s[key]))
        for key, name in (("precision", "precision"), ("device", "device"))
        if s.get(key)
    ]
    if isinstance(s.get("train_seconds"), (int, float)):
        rows.append(("training time", _duration(s["train_seconds"])))
    table = ["| setting | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)]
    command = "python train.py " + " ".join(shlex.quote(o) for o in run_overrides(run))
    lines = [
        "## Training recipe",
        "",
        *(table if rows else ["(the run folder has no .hydra/config.yaml)"]),
        "",
        "The command that trained it (in the ViT workbench):",
        "",
        "```bash",
        command.rstrip(),
        "```",
    ]
    warnings = training_warnings(run)
    if warnings:  # e.g. a warmup shortened for a short run: the table shows the setting
        lines += ["", "What training said of these settings (train.log):", ""]
        lines += [f"- {warning}" for warning in warnings]
    return "\n".join(lines)


def training_warnings(run: Run, most: int = 5) -> list[str]:
    """train.log's warnings (the first ``most``), without their time stamps."""
    try:
        log = (run.path / "train.log").read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = [line.split("[WARNING] - ", 1)[1] for line in log if "[WARNING] - " in line]
    return [line[:400] for line in dict.fromkeys(found)][:most]


def results_section(run: Run, with_curves: bool) -> str:
    s = run.summary
    rows = [
        (
            "best validation accuracy",
            _pct(s.get("best_val_acc"))
            + (
                f" (epoch {s['best_epoch']} of {s.get('epochs_completed', '?')})"
                if s.get("best_epoch")
                else ""
            ),
        ),
        ("test accuracy", _pct(s.get("test_acc"))),
        ("test loss", _num(s.get("test_loss"), ".4f")),
        (
            "test macro precision / recall / F1",
            " / ".join(
                _num(s.get(f"test_macro_{k}"), ".4f") for k in ("precision", "recall", "f1")
            ),
        ),
        ("test weighted F1", _num(s.get("test_weighted_f1"), ".4f")),
    ]
    lines = ["## Results", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    per_class = _per_class(run)
    if per_class is not None:
        lines += ["", "Per class, on the test split:", "", per_class]
    if with_curves:
        lines += ["", f"![Loss, accuracy and learning rate per epoch]({CURVES})"]
    return "\n".join(lines)


def limitations(run: Run) -> str:
    s, card = run.summary, run.card
    classes = len(card["class_names"])
    lines = [
        "## Limitations",
        "",
        f"- Trained and tested on {card['dataset']} alone, at {card['image_size']}x"
        f"{card['image_size']} px: images unlike those (other sources, sizes, "
        f"{'colour' if card['channels'] == 1 else 'grey'}) are outside what it was measured on.",
        f"- It always answers with one of its {classes} classes, even for an image of none.",
    ]
    if s.get("status") != Status.COMPLETED:
        lines.append(
            f"- The run is {s.get('status', 'of unknown status')}, not completed: these are its "
            f"best weights after {s.get('epochs_completed', 0)} epochs."
        )
    acc, images = s.get("test_acc"), (s.get("split_sizes") or {}).get("test")
    if isinstance(acc, (int, float)) and images:
        margin = 1.96 * math.sqrt(max(acc * (1 - acc), 1e-12) / images)
        lines.append(
            f"- The test accuracy comes from {images:,} images: within about ±{margin * 100:.1f} "
            "points (95%), so smaller differences between models say little."
        )
        if acc <= 1 / classes + margin:
            lines.append(
                f"- **Its test accuracy is no better than chance (1 in {classes}): it has not "
                "learned the task.** Share it as an example of the format, not for use."
            )
    elif not isinstance(acc, (int, float)):
        lines.append("- It was not tested: the run has no test metrics.")
    if shift := card.get(CARD_KEY) or 0:
        lines.append(
            f"- The test accuracy averages {(2 * shift + 1) ** 2} views of each image, moved by up "
            f"to {shift} px (`trainer.test_time_shift`); the timm model reads one view, so average "
            "its probabilities over the same shifts (black borders) to match it."
        )
    lines.append("- Not evaluated for robustness, fairness or uses beyond these classes.")
    return "\n".join(lines)


def _per_class(run: Run) -> str | None:
    try:
        table = pd.read_csv(run.path / "metrics_per_class.csv")
    except (OSError, ValueError):
        return None
    if "class" not in table or table.empty:
        return None
    columns = [c for c in ("precision", "recall", "f1", "support") if c in table]
    lines = ["| class | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for row in table.to_dict("records"):
        name = str(row["class"])
        cells = [f"{int(row[c]):,}" if c == "support" else f"{row[c]:.3f}" for c in columns]
        name = f"*{name}*" if name in SUMMARY_AVERAGES else name
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _pct(value: Any) -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) else "-"


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _value(key: str, value: Any) -> str:
    """A setting as the card shows it: a class or function by its own name (``AdamW``)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"`{str(value).rsplit('.', 1)[-1]}`" if key.endswith("._target_") else str(value)


def _floats(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def _channels(channels: int) -> str:
    return "grey (1 channel)" if channels == 1 else f"colour ({channels} channels)"


def _listed(names: list[str], most: int = 12) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
