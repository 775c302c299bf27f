"""DIFF-MF model core: the network, its scan op, checkpoints and the FusionEngine. Never imports ROS."""

from .checkpoint import CheckpointError, load_model, read_checkpoint_config, save_checkpoint
from .config import PRESETS, DiffMFConfig, get_config
from .engine import FusionEngine, default_checkpoint
from .model import DiffMF, build_model

__all__ = [
    "PRESETS", "CheckpointError", "DiffMF", "DiffMFConfig", "FusionEngine", "build_model", "default_checkpoint",
    "get_config", "load_model", "read_checkpoint_config", "save_checkpoint",
]
