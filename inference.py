"""Predict with a saved run.

    python inference.py                          # pick a run from a table, then type image paths
    python inference.py --list                   # the table of saved runs
    python inference.py --run latest --images "photos/*.jpg" --topk 3 [--csv out.csv]
    python inference.py --run outputs/DATE/TIME --report  # per-class metrics and figures, again
    python inference.py --run outputs/DATE/TIME --export-timm exported/   # weights for timm users
    python inference.py --run outputs/DATE/TIME --export-onnx   # model.onnx, for `python -m deploy`
    python inference.py --run outputs/DATE/TIME --export-hf DIR  # timm's folder + a model card

A run is rebuilt from its folder alone: model.json and weights/best.safetensors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from deploy.predictions import Prediction, format_prediction, predict_and_save
from src.errors import ConfigError
from src.predict.predictor import Predictor, images_named
from src.predict.rebuild import rebuild_report
from src.predict.timm_export import export_for_timm
from src.runs.catalogue import RUN_ROOTS, Choice, Run, choose, find_runs, runs_frame
from src.training.device import resolve_device


def runs_table(runs: list[Run]) -> str:
    """Numbered from 1, newest first; runs that cannot be used say why in the status column."""
    percent = "{:.2%}".format
    return runs_frame(runs).to_string(
        index=False, na_rep="-", formatters={"best val": percent, "test": percent}
    )


def describe_choice(choice: Choice) -> str:
    """Which run ``--run latest`` or ``--run best`` took, and why the others were passed over."""
    run = choice.run
    val = run.best_val_acc
    took = (
        f"--run {choice.spec}: {run.path} ({run.summary.get('model', '?')} on "
        f"{run.summary.get('dataset', '?')}, "
        + (f"validation accuracy {val:.2%}" if val is not None else "no validation accuracy")
        + f", {run.summary.get('epochs_completed', 0)} epochs)"
    )
    reasons = choice.reasons()
    lines = [took]
    if reasons:
        newer = " (newer)" if choice.spec == "latest" else ""
        counts = ", ".join(f"{n} {why}" for why, n in reasons.items())
        lines.append(f"  passed over{newer}: {counts}; only completed runs with weights count")
    for other in choice.better_unfinished():
        lines.append(
            f"  {other.path} ({other.passed_over_because}) has {other.best_val_acc:.2%} so far: "
            f"--run {other.path} uses its best weights now"
        )
    return "\n".join(lines)


def chosen_run(args: argparse.Namespace) -> Run:
    """The run ``--run`` names; for latest and best, which one that is, said on stderr (stdout
    holds the predictions)."""
    choice = choose(args.run, args.roots)
    if choice.spec in ("latest", "best"):
        print(describe_choice(choice), file=sys.stderr)
    return choice.run


def predict_images(
    predictor: Predictor, patterns: list[str], args: argparse.Namespace
) -> list[Prediction]:
    """Predict every image that ``patterns`` name; a bad image is reported and skipped."""
    predictions = []
    for path in images_named(patterns):
        try:
            image = predictor.read(path)
        except ConfigError as err:
            print(f"skipped {err}", file=sys.stderr)
            continue
        prediction = predictor.predict_image(image, path, args.topk)
        print(format_prediction(prediction), flush=True)
        if args.attention:
            save_attention(predictor, image, prediction, Path(args.out))
        predictions.append(prediction)
    return predictions


def save_attention(
    predictor: Predictor, image: torch.Tensor, prediction: Prediction, out: Path
) -> None:
    # Imported here so that listing runs and plain predictions start without matplotlib
    # (src.report.plots selects the file-only backend before pyplot loads).
    from src.report.plots import plot_attention_overlay, write_png

    heatmap = predictor.attention_map(image)
    pixels = image.permute(1, 2, 0).squeeze(-1).float().div(255).numpy()
    fig = plot_attention_overlay(
        pixels,
        heatmap.numpy(),
        prediction.classes,
        prediction.probabilities,
        title=f"{prediction.path.name}: {prediction.classes[0]}",
    )
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{prediction.path.stem}_attention.png"
    write_png(fig, target, dpi=110)
    print(f"  attention map: {target}")


def ask(prompt: str) -> str | None:
    """One line from the user; None when they quit (q, Ctrl-D or Ctrl-C)."""
    try:
        answer = input(prompt).strip()
    except (EOFError, KeyboardInterrupt):
        print()
        return None
    return None if answer.lower() in ("q", "quit", "exit") else answer


def pick_interactively(runs: list[Run]) -> Run | None:
    print(runs_table(runs))
    while True:
        answer = ask("\nRun number (Enter: newest completed run, q: quit): ")
        if answer is None:
            return None
        if answer == "":
            ready = [r for r in runs if r.ready]
            if ready:
                return ready[0]
            print("No completed run with weights yet; pick a number.")
            continue
        if not answer.isdigit() or not 1 <= int(answer) <= len(runs):
            print(f"Type a number from 1 to {len(runs)}.")
            continue
        run = runs[int(answer) - 1]
        if run.usable:
            return run
        print(f"Run {answer} cannot be used ({run.problem}); pick another.")


def interactive(args: argparse.Namespace) -> int:
    runs = find_runs(args.roots)
    if not runs:
        raise ConfigError(
            f"there are no runs under {' or '.join(args.roots)}; "
            "train one first with `python train.py`."
        )
    run = pick_interactively(runs)
    if run is None:
        return 0
    predictor = Predictor(run, resolve_device(args.device, "--device "))
    card = run.card
    print(
        f"\nUsing {run.path}: {card['model_name']} on {card['dataset']}, "
        f"{len(card['class_names'])} classes, {card['image_size']}x{card['image_size']} input."
    )
    while (answer := ask("Image, folder or glob (q: quit): ")) is not None:
        if answer:
            try:
                predict_images(predictor, [answer], args)
            except ConfigError as err:
                print(err)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", help="a run folder, 'latest' (newest completed) or 'best' (top val acc)"
    )
    parser.add_argument(
        "--images",
        nargs="+",
        metavar="IMAGES",
        help="images, folders of images, or globs such as 'photos/*.jpg'",
    )
    parser.add_argument("--topk", type=int, default=3, help="how many classes to show (default 3)")
    parser.add_argument("--csv", help="also write the predictions to this CSV file")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument(
        "--list", action="store_true", help="print the table of saved runs and exit"
    )
    parser.add_argument(
        "--attention",
        action="store_true",
        help="save each image with its attention rollout beside the predictions",
    )
    parser.add_argument("--out", default="predictions", help="folder for --attention figures")
    parser.add_argument(
        "--report",
        action="store_true",
        help="with --run: write the run's per-class metrics and figures again",
    )
    parser.add_argument(
        "--export-timm",
        metavar="DIR",
        help="with --run: write the weights and a config.json that timm loads, into DIR",
    )
    parser.add_argument(
        "--export-hf",
        metavar="DIR",
        help="with --run: write a Hugging Face-style folder into DIR: model.safetensors, "
        "config.json (timm loads it) and a README.md model card",
    )
    parser.add_argument(
        "--export-onnx",
        action="store_true",
        help="with --run: write the run's model.onnx, for the torch-free predictor "
        "(python -m deploy)",
    )
    parser.add_argument("--roots", nargs="+", default=list(RUN_ROOTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.topk < 1:
        parser.error("--topk must be at least 1")
    exports = args.export_timm or args.export_onnx or args.export_hf
    if (args.report or exports) and (not args.run or args.images):
        parser.error(
            "--report, --export-timm, --export-hf and --export-onnx go with --run alone "
            "(--run PATH --report)"
        )
    if bool(args.run) != bool(args.images) and not (args.list or args.report or exports):
        parser.error("--run and --images go together (or give neither, to choose interactively)")
    return args


def check_folder_flags(args: argparse.Namespace) -> None:
    """Folders that are made when missing must not be files (a FileExistsError traceback)."""
    for flag, value in (
        ("--out", args.out if args.attention else None),
        ("--export-timm", args.export_timm),
        ("--export-hf", args.export_hf),
    ):
        if value and Path(value).exists() and not Path(value).is_dir():
            raise ConfigError(f"{flag} {value} is a file; give a folder (it is made when missing).")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_folder_flags(args)
        if args.list:  # a damaged run is listed as such, with its sentences on stderr
            runs = find_runs(args.roots)
            print(runs_table(runs) if runs else f"No runs under {' or '.join(args.roots)} yet.")
            for damaged in (err for run in runs for err in run.damaged):
                print(damaged, file=sys.stderr)
            return 0
        if not args.run:
            return interactive(args)
        if args.report:
            run = chosen_run(args)
            written, stats = rebuild_report(run, resolve_device(args.device, "--device "))
            print("\n".join(["wrote:", *written]))
            trained = run.summary.get("test_acc")
            print(
                f"test accuracy {stats.acc:.2%}, loss {stats.loss:.4f} on {stats.images} images"
                + (
                    f" (summary.json: {trained:.2%}, loss {run.summary['test_loss']:.4f})"
                    if trained is not None
                    else ""
                )
            )
            return 0
        if args.export_timm:
            out = export_for_timm(chosen_run(args).path, Path(args.export_timm))
            print(
                f"wrote {out}/model.safetensors and {out}/config.json (timm's names and arguments)"
            )
            return 0
        if args.export_hf:
            from src.predict.hf_export import export_hf  # here: matplotlib only when exporting

            written = export_hf(chosen_run(args), Path(args.export_hf))
            print("\n".join(["wrote:", *(f"  {path}" for path in written)]))
            return 0
        if args.export_onnx:
            from src.predict.onnx_export import (
                export_onnx,  # here: the other commands need no onnx packages
            )

            run = chosen_run(args)
            export_onnx(run)
            print(f"predict without PyTorch: python -m deploy --run {run.path} --images IMAGES")
            return 0

        def predict() -> list[Prediction]:
            predictor = Predictor(chosen_run(args), resolve_device(args.device, "--device "))
            return predict_images(predictor, args.images, args)

        return predict_and_save(predict, args.csv, args.topk)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
