"""Backend-neutral pieces of training (numpy only): the data a run trains on and default weights.

Both trainers (``ppl_dgm.train.loop`` for Pyro, ``ppl_dgm.train.numpyro_loop`` for NumPyro) read the
data set, hold out the validation split, draw the balanced labelled subset and derive the papers'
alpha through these functions, so the two backends train on exactly the same points for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ppl_dgm import registry
from ppl_dgm.config import TrainConfig
from ppl_dgm.data import ImageData, Split, load_dataset, semi_supervised_split

VALIDATION_SEED = 1
TEST_BINARIZATION_SEED = 0


@dataclass
class DataInfo:
    """What a ``build`` function may know about the data (backend-neutral)."""

    x_dim: int
    image_shape: tuple[int, ...]
    n_classes: int
    n_train: int
    n_labelled: int
    n_unlabelled: int
    sequence_length: int = 1


def default_validation_size(n_train: int) -> int:
    """The last 10,000 training points for MNIST-sized sets, else 10% (never the test set)."""
    return 10_000 if n_train >= 50_000 else n_train // 10


def prepare_data(config: TrainConfig) -> tuple[ImageData, Split, DataInfo]:
    """Load ``config.dataset`` and split it: validation hold-out, balanced labelled subset."""
    spec = registry.get(config.model, config.backend)
    data = load_dataset(config.dataset, config.data_dir, **config.dataset_options)
    n_val = (config.validation_size if config.validation_size is not None
             else default_validation_size(len(data.x_train)))
    y_split = data.y_train if data.y_train.ndim == 1 else data.y_train[:, 0]
    labels = config.labels if spec.task == "semi-supervised" else None
    split = semi_supervised_split(y_split, labels, config.seed, n_val,
                                  config.include_labelled_in_unlabelled)
    info = DataInfo(
        x_dim=data.x_dim, image_shape=data.image_shape, n_classes=data.n_classes,
        n_train=len(data.x_train) - n_val, n_labelled=len(split.labelled),
        n_unlabelled=len(split.unlabelled),
        sequence_length=1 if data.y_train.ndim == 1 else data.y_train.shape[1],
    )
    return data, split, info


def default_alpha(info: DataInfo) -> float:
    """The auxiliary-model papers' alpha = 0.1 * N / N_labelled (about 60 for MNIST, 100 labels)."""
    return 0.1 * info.n_unlabelled / max(info.n_labelled, 1)
