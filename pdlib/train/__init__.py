"""Training: the one loop (`train`), its plan (learning rate, EMA, seeds, data order), a run's
state on disk (checkpoints, resume, warm starts), SNR-split training and the CLI.

    python -m pdlib.train --method.name patched --net.preset small --run.steps 2000
    torchrun --standalone --nproc_per_node=2 -m pdlib.train --data.dataset digits --net.preset tiny ...
"""
from pdlib.config import TrainConfig, resolve_config
from pdlib.errors import DivergenceError, RunFolderError
from pdlib.train.loop import TrainResult, preflight, train
from pdlib.train.plan import BatchStream, derive_seed, ema_beta, lr_at, micro_batch_size, total_steps
from pdlib.train.split import SplitResult, train_split

__all__ = ["TrainConfig", "TrainResult", "train", "preflight", "DivergenceError", "RunFolderError",
           "train_split", "SplitResult", "resolve_config", "lr_at", "ema_beta", "derive_seed", "BatchStream", "total_steps", "micro_batch_size",
           "main", "config_from_args"]


def main(argv=None) -> int:
    """Entry point of `python -m pdlib.train` and the `pdlib-train` script."""
    from pdlib.train.cli import main as _main
    return _main(argv)


def config_from_args(argv=None):
    from pdlib.train.cli import config_from_args as _c
    return _c(argv)
