"""The run report: pictures a person looks at, and an ``index.html`` that shows them with the config and numbers.

``write_report(ROOT)`` reads the runs in ROOT (a run folder, or a folder of run folders such as ``runs/pipeline``):
train/val loss curves from the training runs' CSV logs, digits beside their reconstructions by a pretrained
decoder, the 3-d embedding of the held-out digits coloured by digit and the confusion matrix with per-class
accuracy from the prediction run. Reconstructions come from the model's own modules (``model/modules.py``) with the
checkpoint's weights loaded; the training stack (NeMo Lightning) is not needed.
"""

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from megatron_mnist.checkpoint_paths import context_dir, last_checkpoint  # noqa: E402
from megatron_mnist.model.spec import DECODER, TRUNK  # noqa: E402
from megatron_mnist.run_logs import logged  # noqa: E402

GRID_DIGITS = 16


def find_runs(root: Path) -> list[Path]:
    """ROOT itself when it is a run, else its run subfolders (a run has CSV logs or predictions)."""

    def is_run(path: Path) -> bool:
        return (path / "csv_logs").is_dir() or (path / "predictions.pt").is_file()

    if is_run(root):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and is_run(p))


def final_numbers(run: Path) -> dict[str, float]:
    numbers = {}
    for column in ("train_loss", "val_loss"):
        if values := logged(run, column):
            # steps done, as the console summary and CPU checkpoint names count them (CSV rows count from 0)
            numbers[f"final {column}"], numbers["steps"] = values[-1][1], values[-1][0] + 1
    return numbers


def margins(fig, left: float, right: float, bottom: float, top: float, wspace: float = 0.2) -> None:
    """Fixed margins in inches: ``tight_layout`` measured every label to find them, 0.3 s a figure on a 2-core
    machine (a report's figures are of known shapes)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=wspace)  # fmt: skip


def plot_losses(training: list[Path], path: Path) -> None:
    fig, axes = plt.subplots(1, len(training), figsize=(5 * len(training), 3.6), squeeze=False)
    for ax, run in zip(axes[0], training, strict=True):
        for column, style in (("train_loss", "-"), ("val_loss", "o-")):
            if values := logged(run, column):
                steps, losses = zip(*values, strict=True)
                ax.plot(steps, losses, style, label=column, markersize=3)
        ax.set(title=run.name, xlabel="step", ylabel="loss", yscale="log")
        ax.legend()
        ax.grid(alpha=0.3)
    margins(fig, left=1.0, right=0.2, bottom=0.55, top=0.35, wspace=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def autoencoder(run: Path) -> dict[str, torch.Tensor] | None:
    """The trunk and decoder weights of a run's last checkpoint, when it has a decoder."""
    from megatron_mnist.model.weights import load_model_weights

    ckpt = last_checkpoint(run)
    if ckpt is None:
        return None
    weights = load_model_weights(ckpt)
    return weights if f"{DECODER}.0.weight" in weights else None


def reconstruct(weights: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """The digits as the checkpoint's autoencoder rebuilds them: its trunk and decoder (the model's own layers,
    ``model/layers.py``) with the checkpoint's weights."""
    from megatron_mnist.model import layers

    # both sizes are in the weights' shapes
    hidden, embedding = weights[f"{TRUNK}.0.weight"].shape[0], weights[f"{TRUNK}.2.weight"].shape[0]
    net = {TRUNK: layers.trunk(hidden, embedding), DECODER: layers.image_decoder(hidden, embedding)}
    for name, layer in net.items():
        layer.load_state_dict({k[len(name) + 1 :]: v.float() for k, v in weights.items() if k.startswith(name + ".")})
    with torch.no_grad():
        return net[DECODER](net[TRUNK](images.reshape(images.shape[0], -1))).reshape(images.shape)


def plot_reconstructions(images: torch.Tensor, rebuilt: torch.Tensor, labels: torch.Tensor, path: Path) -> None:
    """The digits above their reconstructions, drawn as one picture (a grid of 2 × n tiles): one image and n labels
    instead of 2n axes, which took most of a report's drawing time (1.1 s of 3.5 s on a 2-core machine)."""
    n, gap = len(images), 2
    grid = torch.ones(2 * 28 + gap, n * (28 + gap) - gap)  # white between the tiles
    for i in range(n):
        for row, picture in enumerate((images[i], rebuilt[i])):
            top, left = row * (28 + gap), i * (28 + gap)
            grid[top : top + 28, left : left + 28] = picture.reshape(28, 28).clamp(0, 1)
    fig, ax = plt.subplots(figsize=(n * 0.9, 2.2))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([i * (28 + gap) + 13.5 for i in range(n)], [str(int(label)) for label in labels], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    fig.suptitle("held-out digits (top) and their reconstructions (bottom)", fontsize=9, y=0.98)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.8)  # room for the labels and the title
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_embedding(z: torch.Tensor, labels: torch.Tensor, path: Path) -> None:
    """The 3-d embedding seen from four sides: in 3-d and projected on each pair of axes, each digit's cluster
    labelled with the digit at its median (tab10's colours alone left digit 1's cluster lost inside digit 3's)."""
    fig = plt.figure(figsize=(10, 9))
    # drawn in a shuffled order, half transparent: drawn digit by digit, the last digits' clusters hid the others
    order = torch.randperm(len(z), generator=torch.Generator().manual_seed(0))
    z, labels = z[order], labels[order]
    style = {"c": labels, "cmap": "tab10", "s": 4, "vmin": -0.5, "vmax": 9.5, "alpha": 0.5}
    centres = {d: z[labels == d].median(dim=0).values for d in range(10) if (labels == d).any()}
    ax = fig.add_subplot(2, 2, 1, projection="3d")
    points = ax.scatter(z[:, 0], z[:, 1], z[:, 2], **style)
    ax.set(xlabel="z1", ylabel="z2", zlabel="z3", title="3-d")
    for digit, centre in centres.items():
        ax.text(*centre.tolist(), str(digit), fontsize=11, weight="bold")
    for panel, (a, b) in enumerate(((0, 1), (0, 2), (1, 2)), start=2):
        ax = fig.add_subplot(2, 2, panel)
        ax.scatter(z[:, a], z[:, b], **style)
        ax.set(xlabel=f"z{a + 1}", ylabel=f"z{b + 1}", title=f"z{a + 1} against z{b + 1}")
        for digit, centre in centres.items():
            ax.annotate(str(digit), (centre[a], centre[b]), fontsize=11, weight="bold", ha="center", va="center",
                        bbox={"boxstyle": "circle,pad=0.15", "fc": "white", "alpha": 0.7})  # fmt: skip
    fig.colorbar(points, ax=fig.axes, ticks=range(10), label="digit", shrink=0.6)
    fig.suptitle("3-d embedding of the held-out digits (the number at each cluster's median)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[true digit, predicted digit] counts."""
    return torch.bincount(labels * 10 + predicted, minlength=100).reshape(10, 10)


def plot_confusion(matrix: torch.Tensor, path: Path) -> None:
    per_class = matrix.diag() / matrix.sum(1).clamp(min=1)
    fig, ax = plt.subplots(figsize=(6, 5.2))
    ax.imshow(matrix, cmap="Blues")
    for i in range(10):
        for j in range(10):
            color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted digit")
    ax.set_yticklabels([f"{d}  ({per_class[d]:.0%})" for d in range(10)])
    ax.set_ylabel("true digit  (per-class accuracy)")
    ax.set_title(f"confusion matrix — accuracy {matrix.diag().sum() / matrix.sum():.4f}")
    margins(fig, left=1.3, right=0.2, bottom=0.6, top=0.4)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def config_summary(run: Path) -> dict[str, str]:
    """A few fields of the model a run trained, from its checkpoint's NeMo context."""
    ckpt = last_checkpoint(run)
    context = context_dir(ckpt) / "model.yaml" if ckpt is not None else None
    if context is None or not context.is_file():
        return {}
    model = yaml.safe_load(context.read_text())
    config, optim = model.get("config", {}), model.get("optim", {}).get("config", {})
    summary = {"model": str(config.get("_target_", "")).rsplit(".", 1)[-1], "hidden_size": config.get("hidden_size")}
    if isinstance(optim, dict) and "lr" in optim:
        summary["lr"] = optim["lr"]
    summary["context"] = str(context)
    return {k: str(v) for k, v in summary.items() if v is not None}


def write_report(root: str | Path, out: str | Path | None = None) -> Path:
    """Write the pictures and ``index.html`` into ``out`` (default ROOT/report); returns the index's path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"report: {root} is not a directory (expected a run folder or a folder of runs)")
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"report: no runs in {root} (a run folder has csv_logs/ or predictions.pt)")
    out = Path(out) if out is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures, numbers = [], {}

    training = [run for run in runs if logged(run, "train_loss")]
    if training:
        plot_losses(training, out / "losses.png")
        figures.append(("losses.png", "train and validation loss"))
        numbers.update({f"{run.name}: {k}": v for run in training for k, v in final_numbers(run).items()})

    for run in runs:
        if not (run / "predictions.pt").is_file():
            continue
        predictions = torch.load(run / "predictions.pt", weights_only=True)
        labels = predictions["label"].long()
        plot_embedding(predictions["z"].float(), labels, out / "embedding.png")
        figures.append(("embedding.png", "3-d embedding, coloured by digit"))
        if "digit_logits" in predictions:
            matrix = confusion_matrix(predictions["digit_logits"].argmax(-1), labels)
            plot_confusion(matrix, out / "confusion.png")
            figures.append(("confusion.png", "confusion matrix"))
            numbers[f"{run.name}: accuracy"] = float(matrix.diag().sum() / matrix.sum())
            numbers[f"{run.name}: digits"] = int(matrix.sum())
            per_class = matrix.diag() / matrix.sum(1).clamp(min=1)
            numbers.update({f"{run.name}: accuracy of digit {d}": float(per_class[d]) for d in range(10)})

    decoders = [(run, w) for run in training if (w := autoencoder(run)) is not None]
    if decoders:
        from megatron_mnist.data.idx import embedded_sample_root, mnist_folder, read_mnist, unit_range

        # the embedded sample's held-out digits, as the dataset gives them (read here without torchvision, whose
        # import is most of a report's start-up)
        images, labels = read_mnist(mnist_folder(embedded_sample_root()), "t10k")
        images = torch.from_numpy(unit_range(images[:GRID_DIGITS]))
        labels = torch.from_numpy(labels[:GRID_DIGITS].astype("int64"))
        run, weights = decoders[0]
        plot_reconstructions(images, reconstruct(weights, images), labels, out / "reconstructions.png")
        figures.append(("reconstructions.png", f"reconstructions by {run.name}'s decoder"))

    (out / "numbers.json").write_text(json.dumps(numbers, indent=2) + "\n")
    (out / "index.html").write_text(render_html(root, runs, figures, numbers))
    return out / "index.html"


def render_html(root: Path, runs: list[Path], figures: list[tuple[str, str]], numbers: dict) -> str:
    def table(rows) -> str:
        cells = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        return f"<table>{cells}</table>"

    def fmt(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    configs = "".join(
        f"<h3>{html.escape(run.name)}</h3>{table(summary.items())}" for run in runs if (summary := config_summary(run))
    )
    images = "".join(
        f'<figure><img src="{name}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption>'
        "</figure>"
        for name, caption in figures
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>megatron-mnist report: {html.escape(str(root))}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} img{{max-width:100%}}
table{{border-collapse:collapse}} td{{border:1px solid #ccc;padding:2px 8px}} figure{{margin:1.5em 0}}</style>
</head><body>
<h1>megatron-mnist report</h1><p>{html.escape(str(root))}: runs {html.escape(", ".join(r.name for r in runs))}</p>
<h2>Final numbers</h2>{table((k, fmt(v)) for k, v in numbers.items())}
{images}
<h2>Config</h2>{configs or "<p>no checkpoint context found</p>"}
</body></html>
"""
