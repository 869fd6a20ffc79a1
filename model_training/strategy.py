"""Choosing the `tf.distribute` strategy the network is trained under."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

logger = logging.getLogger(__name__)


class StrategyChoice(StrEnum):
    """Which accelerator to train on (``--strategy``)."""

    AUTO = "auto"
    """A TPU when one is reachable, else every local GPU, else the CPU."""
    TPU = "tpu"
    GPU = "gpu"
    CPU = "cpu"


class StrategyUnavailableError(RuntimeError):
    """The strategy asked for cannot run on this machine (no TPU, no GPU)."""


def _tpu_strategy() -> Any | None:
    """A `TPUStrategy` on the TPU this process can reach, or None when there is none."""
    import tensorflow as tf

    try:
        # With no argument the resolver looks for a TPU attached to this VM (TPU VMs, Colab
        # and Cloud TPU set the environment it reads); it raises ValueError when there is none.
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        logger.debug("no TPU reachable: %s", exc)
        return None
    return tf.distribute.TPUStrategy(resolver)


def choose_strategy(choice: StrategyChoice = StrategyChoice.AUTO) -> Any:
    """Return the distribution strategy to build and fit the model under.

    Args:
        choice: ``auto`` picks a TPU, then GPUs, then the CPU; the others insist on one.

    Returns:
        A ``tf.distribute.Strategy``: `TPUStrategy`, `MirroredStrategy` over every visible
        GPU, or the default (single-device) strategy.

    Raises:
        StrategyUnavailableError: ``tpu`` or ``gpu`` was asked for and none is available.
    """
    import tensorflow as tf

    if choice in (StrategyChoice.AUTO, StrategyChoice.TPU):
        tpu = _tpu_strategy()
        if tpu is not None:
            logger.info("training on TPU: %d replicas", tpu.num_replicas_in_sync)
            return tpu
        if choice is StrategyChoice.TPU:
            raise StrategyUnavailableError("--strategy tpu: no TPU is reachable from here")
    if choice in (StrategyChoice.AUTO, StrategyChoice.GPU):
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            strategy = tf.distribute.MirroredStrategy()
            logger.info("training on %d GPU(s) with MirroredStrategy", len(gpus))
            return strategy
        if choice is StrategyChoice.GPU:
            raise StrategyUnavailableError("--strategy gpu: TensorFlow sees no GPU")
    logger.info("training on CPU (default strategy)")
    return tf.distribute.get_strategy()


def strategy_name(strategy: Any) -> str:
    """Name a strategy for logs and the model card, e.g. ``MirroredStrategy x2``."""
    return f"{type(strategy).__name__} x{strategy.num_replicas_in_sync}"
