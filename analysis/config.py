"""The analysis stage's settings: `srdpo-eval figures` flags and reproduce's `analysis:` section."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.settings import option


@dataclass
class AnalysisConfig:
    n_boot: int = option(2000, ge=1, help="bootstrap resamples for every confidence interval")
    seed: int = option(0, ge=0, help="seed of the bootstrap resamples")
