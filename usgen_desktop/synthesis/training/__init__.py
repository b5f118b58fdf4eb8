"""Training of the generators (sdm, LoRA); torch is imported inside the functions."""
