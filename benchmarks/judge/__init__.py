"""Judging answers: FastChat's prompts and verdict rules, behind one chat-backend interface.

    prompts.py          which FastChat judge prompt grades which question/turn; rendering; verdict parsing
    backend.py          the ChatBackend protocol (model name + async chat)
    openai_backend.py   ChatBackend on any OpenAI-compatible server, with one retry policy (tenacity)
    local.py            ChatBackend on a local Hugging Face model
    cache.py            SQLite cache of raw replies keyed by the sha256 of the full request
    jsonl.py            JSON-lines files read with file/line errors and appended record by record
    estimate.py         token and cost estimate of a dry run
    run.py              judge_single / judge_pairwise: matches, concurrency, resumable judgment files
"""
