"""Compact trainer for SFT, DPO, IPO, Sr-DPO and Sr-IPO on any Hugging Face causal LM."""
