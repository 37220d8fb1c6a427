"""Benchmarks that take checkpoints: MT-Bench / Vicuna-Bench (answers + judge) and the Open LLM Leaderboard."""
