"""Generation: requests, results, devices, backends (speckle, sdm, controlnet) and training.

Importing this package is cheap; torch and diffusers load inside the backends that need them.
"""

from usgen_desktop.synthesis.request import GenerationRequest, Result, run, seed_for

__all__ = ["GenerationRequest", "Result", "run", "seed_for"]
