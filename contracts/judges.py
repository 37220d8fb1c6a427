"""The judge-backend registry: every kind of judge, with what the other stages need to know of it.

Adding a backend is one entry here plus the function that builds it (``benchmarks.judge.config.MAKERS``).
The judge stage, `reproduce`, its plan and the ids read these fields; none compares a backend's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.errors import UserError


@dataclass(frozen=True)
class JudgeBackend:
    name: str  # as written in configs and flags (--judge-backend)
    summary: str  # one line for --help
    local: bool  # a checkpoint run here: named ``local-<model id>`` (contracts.ids.judge_id), its dtype matters
    calibrated: bool  # its replies carry probabilities the judge stage calibrates (benchmarks/judge/calibration.py)
    served: bool  # reached over HTTP (an endpoint, retries, concurrency), calls may cost money


JUDGE_BACKENDS: dict[str, JudgeBackend] = {b.name: b for b in (
    JudgeBackend("openai", "any OpenAI-compatible server: OpenAI's GPT-4, vLLM, llama.cpp, TGI", local=False,
                 calibrated=False, served=True),
    JudgeBackend("local", "a local checkpoint scoring each verdict with its own probabilities, calibrated",
                 local=True, calibrated=True, served=False),
)}


def auto(endpoint: bool) -> str:
    """The backend of a judge left to "auto": a served one where an endpoint or key is given, else a local one."""
    return next(b.name for b in JUDGE_BACKENDS.values() if (b.served if endpoint else b.local))


def names() -> tuple[str, ...]:
    return tuple(JUDGE_BACKENDS)


def get_judge_backend(name: str) -> JudgeBackend:
    try:
        return JUDGE_BACKENDS[name]
    except KeyError:
        raise UserError(f"unknown judge backend {name!r}: use one of {', '.join(JUDGE_BACKENDS)}") from None
