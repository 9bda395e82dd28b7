"""What privacy a config asks for, decided in one place (`PrivacyPlan.from_config`).

Three mechanisms, three units, each usable alone or together:

| key | what runs | unit protected | epsilon |
|---|---|---|---|
| ``expert_epsilon`` | every expert fine-tuned with DP-SGD (`models.dp_sgd`); every reward, calibration bit and probe answer is post-processing of the DP model | one record of the client's private data | ``expert_epsilon`` per client, for the whole run, however many values it sends |
| ``label_epsilon`` | answer-based scoring reads labels randomised once per record (`LabelRandomizedResponse`) | one record's label | ``label_epsilon`` per record, however many times it is queried |
| ``reward_epsilon`` | every value a client sends noised on the client (`RandomizedResponse` or `BoundedLaplace`) | one released value | composes over the distinct values released: large over a run |

Everything else reads this plan: the client's state (`client`), the server's debiasing
(`reward_debias`, `calibration_debias`), the re-check's view of a noisy reward (`keep_probability`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedgrpo.config import FedGRPOConfig
from fedgrpo.errors import ConfigError
from fedgrpo.privacy.client import ClientPrivacy
from fedgrpo.privacy.mechanisms import (
    VALUE_MECHANISMS,
    LabelRandomizedResponse,
    RandomizedResponse,
    keep_probability,
)


@dataclass(frozen=True)
class ExpertDP:
    """The DP-SGD target of each expert's fine-tuning: (epsilon, delta) for the whole training,
    per-sample clipping at `clip_norm`, Poisson sampling at an expected `batch_size`, `steps` steps."""

    epsilon: float
    delta: float
    clip_norm: float
    batch_size: int
    learning_rate: float
    steps: int

    def sampling_rate(self, records: int) -> float:
        return min(1.0, self.batch_size / max(records, 1))

    def check(self, records: int, who: str = "a client") -> None:
        """ConfigError naming the fix when the target does not fit `records` private items."""
        from fedgrpo.privacy.accounting import check_dpsgd_target

        if self.delta > 1.0 / records:
            raise ConfigError(f"expert_delta {self.delta:g} is above 1/n for {who} with {records} private items; "
                              f"set expert_delta to at most {1.0 / records:.3g}")
        if self.batch_size > records:
            raise ConfigError(f"expert_dp_batch_size {self.batch_size} is larger than {who}'s {records} private "
                              "items; lower it")
        try:
            check_dpsgd_target(self.epsilon, self.delta, self.sampling_rate(records), self.steps)
        except ValueError as exc:
            raise ConfigError(f"expert_epsilon is out of reach: {exc}; raise expert_epsilon or lower "
                              "expert_steps or expert_dp_batch_size") from None

    def recipe(self) -> dict[str, Any]:
        """What the cache key of a DP expert holds (never the secret its noise came from)."""
        return {"epsilon": self.epsilon, "delta": self.delta, "clip_norm": self.clip_norm,
                "batch_size": self.batch_size, "learning_rate": self.learning_rate, "steps": self.steps,
                "sampling": "poisson", "accountant": "prv"}


@dataclass(frozen=True)
class PrivacyPlan:
    experts: ExpertDP | None = None
    labels: LabelRandomizedResponse | None = None
    values: Any = None  # the reward mechanism of per-value LDP (RandomizedResponse or BoundedLaplace)
    calibration: RandomizedResponse | None = None  # calibration bits, whenever per-value LDP is on
    delta: float = 1e-5  # of the per-value accounting
    budget: float | None = None
    debias: bool = True

    @classmethod
    def from_config(cls, config: FedGRPOConfig) -> PrivacyPlan:
        p, models = config.privacy, config.models
        experts = None
        if p.expert_epsilon is not None:
            experts = ExpertDP(p.expert_epsilon, p.expert_delta, p.expert_clip_norm,
                               p.expert_dp_batch_size or models.sft_batch_size,
                               p.expert_dp_learning_rate or models.sft_learning_rate, models.expert_steps)
        values = calibration = None
        if p.reward_epsilon is not None:
            values = VALUE_MECHANISMS[p.reward_mechanism](p.reward_epsilon)
            calibration = RandomizedResponse(p.reward_epsilon)  # calibration values are 0/1
        labels = LabelRandomizedResponse(p.label_epsilon) if p.label_epsilon is not None else None
        return cls(experts, labels, values, calibration, p.privacy_delta, p.privacy_budget, p.reward_debias)

    @property
    def on_client(self) -> bool:
        """Whether a client keeps privacy state (a secret and a journal)."""
        return self.values is not None or self.labels is not None

    def client(self, state_dir: Path) -> ClientPrivacy | None:
        """A client's privacy state in its own `state_dir` (None when the plan needs none)."""
        if not self.on_client:
            return None
        return ClientPrivacy(state_dir, values=self.values, calibration=self.calibration, delta=self.delta,
                             budget=self.budget, labels=self.labels)

    def reward_debias(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The server's map from released rewards to estimates of the true ones (None: nothing to undo)."""
        if self.values is None or not self.debias or not isinstance(self.values, RandomizedResponse):
            return None
        return self.values.debias

    def calibration_debias(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The map from a mean of released calibration bits to the estimate of the true mean."""
        if self.calibration is None or not self.debias:
            return None
        return self.calibration.debias

    def keep_probability(self) -> float:
        """The probability a released 0/1 reward is the true one (1 without randomised response)."""
        return keep_probability(self.values.epsilon) if isinstance(self.values, RandomizedResponse) else 1.0
