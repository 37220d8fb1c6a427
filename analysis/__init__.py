"""Analysis of stored results: Δπ vs quality, win rates, curves, paper-style figures and tables."""
