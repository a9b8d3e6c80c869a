"""Can the Hugging Face hub be used right now? One quick answer per process.

A task whose data is not in ``--data-dir`` may fall back to the hub (HellaSwag). Offline, the hub
clients retry for most of a minute before failing, so the eval asks here first and skips the task at
once: ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` set means "local cache only", otherwise a single
HEAD request to ``HF_ENDPOINT`` (default https://huggingface.co, proxies from the environment as the
hub clients use them) with a short timeout decides.
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.request

PROBE_TIMEOUT_S = 3.0
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def offline_variable() -> str | None:
    """The name of the first offline switch set to a true value (the hub clients' spelling), else None."""
    for var in OFFLINE_VARS:
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return var
    return None


@functools.cache
def unreachable_reason(endpoint: str | None = None) -> str | None:
    """None when the hub answered a HEAD request within :data:`PROBE_TIMEOUT_S` (any HTTP status
    counts: the host is there); otherwise why not, e.g. ``"https://huggingface.co: URLError: ..."``.
    Cached, so a run of many tasks probes once."""
    url = endpoint or os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as err:  # URLError, timeouts and refused connections are OSErrors
        return f"{url}: {type(err).__name__}: {err}"
    return None
