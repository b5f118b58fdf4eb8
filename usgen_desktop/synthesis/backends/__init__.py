"""Generation backends, one module each, all with ``load(request) -> Backend``.

``speckle`` (physics simulator, no weights, the default), ``sdm`` (label-map diffusion) and
``controlnet`` (Stable Diffusion 1.5 + ControlNet). The registry of names lives in
``synthesis.request.BACKENDS``; this package imports none of them, so listing backends is cheap
and torch loads only when a diffusion backend is used.
"""

from usgen_desktop.synthesis.request import BACKENDS, DEFAULT_BACKEND

NEEDS_MODEL = {"speckle": False, "sdm": True, "controlnet": True}

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "NEEDS_MODEL"]
