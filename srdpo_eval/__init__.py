"""srdpo-eval: reproduce Sr-DPO / Sr-IPO end to end (command line and run directory)."""
