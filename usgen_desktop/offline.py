"""Keep USGen offline: no library it loads may reach for the network.

Hospital desktops are often offline or behind a proxy that logs every outgoing connection, and
Hugging Face libraries try the hub (model look-ups, telemetry) unless told not to. Every entry
point (GUI, CLI, selftest) calls :func:`enforce_offline` before importing diffusers or
transformers, because those read the variables when they are first imported.
"""

from __future__ import annotations

import os

# Variables read by huggingface_hub, transformers, diffusers, datasets and tqdm-style telemetry.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "DO_NOT_TRACK": "1",
}


def enforce_offline(env: dict[str, str] | None = None) -> dict[str, str]:
    """Set the offline variables (overriding any user value: the app never needs the hub).

    ``USGEN_ALLOW_NETWORK=1`` leaves the environment alone, for developers who fetch base models
    on purpose. Returns the variables that were set.
    """
    target = os.environ if env is None else env
    if target.get("USGEN_ALLOW_NETWORK") == "1":
        return {}
    for key, value in OFFLINE_ENV.items():
        target[key] = value
    return dict(OFFLINE_ENV)


def is_offline(env: dict[str, str] | None = None) -> bool:
    """True when every offline variable is set as :func:`enforce_offline` sets it."""
    source = os.environ if env is None else env
    return all(source.get(k) == v for k, v in OFFLINE_ENV.items())
