"""PyInstaller runtime hook: runs before the entry script in the packaged app.

Sets the offline variables as early as possible (before any bundled module can read them)
and keeps Qt from looking for plugins outside the install folder.
"""

import os

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE",
             "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    if os.environ.get("USGEN_ALLOW_NETWORK") != "1":
        os.environ[_key] = "1"
# A system-wide QT_PLUGIN_PATH (from another Qt app) would load plugins of another Qt version.
os.environ.pop("QT_PLUGIN_PATH", None)
