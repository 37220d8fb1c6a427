"""Judging answers: FastChat's prompts and verdict rules, behind one chat-backend interface."""
