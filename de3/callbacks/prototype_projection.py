"""A picture of the DE³ metric spaces: dev samples and class prototypes, projected to 2-D by PCA."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import WandbLogger  # noqa: E402
from lightning.pytorch.trainer.states import TrainerFn  # noqa: E402

from de3.exit_cache import collect_exit_cache  # noqa: E402
from de3.utils.io import atomic_path  # noqa: E402

log = logging.getLogger(__name__)


def pca_2d(points: torch.Tensor) -> torch.Tensor:
    """[N, d] → [N, 2]: coordinates on the two leading principal components."""
    centred = points - points.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T


def plot_prototype_projection(
    mapped: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor,
    layers: list[int],
    label_names: list[str],
    path: Path,
) -> Path:
    """One panel per internal layer (0-based indices in `layers`): samples coloured by their
    true class, prototypes as stars; samples and prototypes share one PCA per layer."""
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 4), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, layer in zip(axes[0], layers):
        coords = pca_2d(torch.cat([mapped[layer], prototypes[layer]]))
        samples, centres = coords[: len(labels)], coords[len(labels) :]
        for k, name in enumerate(label_names):
            chosen = labels == k
            ax.scatter(samples[chosen, 0], samples[chosen, 1], s=6, alpha=0.5, color=colours(k), label=name)
            ax.scatter(
                centres[k, 0],
                centres[k, 1],
                s=260,
                marker="*",
                color=colours(k),
                edgecolors="black",
                linewidths=1.2,
                zorder=3,
            )
        ax.set_title(f"layer {layer + 1}")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(loc="best", fontsize=8, markerscale=2)
    fig.suptitle("dev samples (dots) and class prototypes (stars), PCA of the metric space")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


class PrototypeProjection(L.Callback):
    """After the best checkpoint is evaluated, draws `prototypes.png` (and logs it to W&B) for
    `num_panels` internal layers spread from the first to the last. Does nothing without prototypes."""

    def __init__(self, output_dir: str, num_panels: int = 3, max_samples: int = 1000) -> None:
        self.output_dir = Path(output_dir)
        self.num_panels = num_panels
        self.max_samples = max_samples

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        prototypes = pl_module.model.prototypes
        if prototypes is None or trainer.state.fn != TrainerFn.VALIDATING or not trainer.is_global_zero:
            return
        loader = trainer.datamodule.whole_eval_dataloaders(limit=self.max_samples)[0]
        cache = collect_exit_cache(pl_module.model, loader, keep_mapped=True, description="projecting prototypes")
        internal = prototypes.prototypes.shape[0]
        layers = sorted({round(i * (internal - 1) / max(self.num_panels - 1, 1)) for i in range(self.num_panels)})
        path = plot_prototype_projection(
            cache.mapped,
            cache.labels,
            prototypes.prototypes.cpu(),
            layers,
            list(pl_module.task.label_names),
            self.output_dir / "prototypes.png",
        )
        log.info("prototype projection written to %s", path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("prototypes", images=[str(path)])
