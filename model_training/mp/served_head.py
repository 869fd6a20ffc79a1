"""The served Materials Project head: the networks, the trees beside them, one temperature."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from model_training.data import LabelledData
from model_training.metrics import Probabilities, fit_temperature, probabilities_from_logits
from model_training.mp.confidence import member_spread
from model_training.mp.config import ModelConfig, Preset, TrainConfig
from model_training.mp.fit import TrainedNetwork, fit_network
from model_training.mp.tree_blend import TreeSets, blend, choose_share


@dataclass(frozen=True)
class ServedHead:
    """The served Materials Project head, as it is exported: networks, trees, temperature.

    Attributes:
        network: The trained ensemble of networks.
        trees: The LightGBM boosters compiled beside them, or None (networks alone).
        network_share: The networks' weight in the blend with the trees (`blend`); 1
            without trees.
        temperature: Divides the blended logits (and each member's) before the softmax.
    """

    network: TrainedNetwork
    trees: TreeSets | None
    network_share: float
    temperature: float

    @property
    def member_names(self) -> tuple[str, ...]:
        """The ensemble members, by name."""
        return tuple(member.name for member in self.network.members)

    def logits(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The head's logits of raw feature rows, before the temperature."""
        logits = self.network.logits(features)
        if self.trees is None:
            return logits
        return blend(logits, self.trees.log_probabilities(features), self.network_share)

    def probabilities(self, features: npt.NDArray[np.float32]) -> Probabilities:
        """The calibrated probabilities of raw feature rows."""
        return probabilities_from_logits(self.logits(features), self.temperature)

    def spread(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The members' spread of raw feature rows (`member_spread`), each blended alike."""
        members = self.network.member_logits(features)
        if self.trees is not None:
            trees = self.trees.log_probabilities(features)
            members = [blend(logits, trees, self.network_share) for logits in members]
        probabilities = [probabilities_from_logits(m, self.temperature) for m in members]
        return member_spread(np.stack(probabilities, axis=1))

    def describe(self) -> str:
        """What the head is, in a few words, for the model card."""
        members = len(self.network.members)
        if self.network.model_config.preset is Preset.SEED:
            networks = f"the mean of {members} network(s) of the study's shape on the raw vector"
        else:
            networks = (
                f"the mean of {members} MLPs on derived composition features computed in the graph"
            )
        if self.network.train_config.distillation > 0:
            networks += ", distilled from LightGBM's out-of-fold probabilities and the labels"
        if self.trees is None:
            return f"{networks}, temperature-scaled"
        return (
            f"{networks}, blended (network share {self.network_share:g}, chosen on "
            f"validation) with {len(self.trees.seeds)} LightGBM boosters of depth "
            f"{self.trees.depth} ({self.trees.n_trees} trees) compiled into the same graph, "
            "temperature-scaled"
        )


def fit_head(
    train: LabelledData,
    validation: LabelledData,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    strategy: Any,
    verbose: int = 2,
) -> ServedHead:
    """Fit the served head: the networks, the trees beside them, the share, the temperature.

    Args:
        train: Training rows.
        validation: Rows for early stopping, the networks' share and the temperature.
        model_config: The networks' architecture and the trees (``tree_sets`` of 0: none).
        train_config: How the networks are fitted.
        strategy: The ``tf.distribute`` strategy the networks are fitted under.
        verbose: Keras progress output (0, 1 or 2).

    Returns:
        The head, calibrated.
    """
    network = fit_network(
        train,
        validation,
        model_config=model_config,
        train_config=train_config,
        strategy=strategy,
        verbose=verbose,
    )
    validation_logits = network.logits(validation.features)
    trees, share = None, 1.0
    if model_config.tree_sets:
        trees = TreeSets.fit(
            train,
            validation,
            seeds=range(model_config.seed, model_config.seed + model_config.tree_sets),
            depth=model_config.tree_depth,
            learning_rate=model_config.tree_learning_rate,
        )
        tree_log_probabilities = trees.log_probabilities(validation.features)
        share, _ = choose_share(validation_logits, tree_log_probabilities, validation.labels)
        validation_logits = blend(validation_logits, tree_log_probabilities, share)
    temperature = fit_temperature(validation_logits, validation.labels)
    return ServedHead(network, trees, share, temperature)
