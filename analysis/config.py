"""The analysis stage's settings: `srdpo-eval figures` flags and reproduce's `analysis:` section."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from contracts.settings import option


EXECUTION_ONLY: tuple[str, ...] = ()  # both settings change the report's numbers


@dataclass
class AnalysisConfig:
    n_boot: int = option(2000, ge=1, help="bootstrap resamples for every confidence interval")
    seed: int = option(0, ge=0, help="seed of the bootstrap resamples")


def result_key(cfg: AnalysisConfig) -> dict:
    """What decides the tables and figures besides the stored results (the one definition)."""
    return {k: v for k, v in asdict(cfg).items() if k not in EXECUTION_ONLY}
