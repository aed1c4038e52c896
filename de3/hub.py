"""Whether the Hugging Face hub can be reached, decided at once, and what a run would need
from it: so that a machine without network fails in seconds, naming every missing input,
instead of retrying downloads for minutes."""

from __future__ import annotations

import functools
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import constants, try_to_load_from_cache

from de3.data.tasks import TaskSpec

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 3.0


def looks_like_path(path: str) -> bool:
    """Whether `path` names a directory (relative, absolute or in home) rather than a hub id."""
    return path.startswith((".", "/", "~")) or os.sep in path.strip("/") and path.count("/") > 1


@functools.cache
def _probe(endpoint: str) -> str | None:
    """One HEAD request to `endpoint` (proxies honoured): None if anything answers, else why not."""
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=PROBE_TIMEOUT_S)
    except urllib.error.HTTPError:
        return None  # an HTTP error status is still an answer
    except (OSError, ValueError) as err:
        return f"{endpoint} did not answer within {PROBE_TIMEOUT_S:.0f} s ({getattr(err, 'reason', err)})"
    return None


def hub_unreachable() -> str | None:
    """None when the hub can be used; otherwise why not: `HF_HUB_OFFLINE` is set, or one short
    probe of the endpoint failed (probed once per process). Once it is known to be unreachable,
    offline mode is switched on, so that Hugging Face libraries use their caches at once."""
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE is set"
    reason = _probe(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    if reason is not None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        constants.HF_HUB_OFFLINE = True
        log.warning("the Hugging Face hub is unreachable: %s", reason)
    return reason


def _dataset_is_cached(task: TaskSpec) -> bool:
    import datasets.config  # slow to import: only asked when the hub is unreachable

    hub = task.hub
    return (Path(datasets.config.HF_DATASETS_CACHE) / hub.path.replace("/", "___") / hub.name).is_dir()


def missing_hub_inputs(
    backbone: Mapping[str, Any], task: TaskSpec, splits: Iterable[str], data_dir: str | None, source: str
) -> list[str]:
    """What a run of `backbone` on `splits` of `task` cannot get while the hub is unreachable,
    one line each with how to provide it (a split held out of the training file needs only that
    file). Empty when everything is local (in a directory or a Hugging Face cache) or the hub
    answers; the hub is probed only when something is not in a local directory, and offline
    mode is then switched on (`hub_unreachable`)."""
    path = None if backbone.get("random_init") else backbone.get("path")
    model_remote = path is not None and not looks_like_path(path) and not os.path.isdir(os.path.expanduser(path))
    files = [task.local.file_path(split, data_dir) for split in splits if split not in task.local.held_out]
    absent = [str(f) for f in files if source == "hub" or not f.is_file()]
    data_remote = bool(absent) and source != "local" and task.hub is not None
    if not (model_remote or data_remote):
        return []
    reason = hub_unreachable()
    if reason is None:
        return []
    missing = []
    if model_remote and not isinstance(try_to_load_from_cache(path, "config.json"), str):
        missing.append(
            f"model {path!r} (backbone={backbone['name']}): not a local directory nor in the Hugging Face "
            f"cache. Download it where the hub is reachable (`hf download {path} --local-dir DIR`) and set "
            "backbone.path=DIR"
        )
    if data_remote and not _dataset_is_cached(task):
        missing.append(
            f"data of task {task.name!r}: no {', '.join(absent)}, and {task.hub.path}/{task.hub.name} is not "
            "in the datasets cache. Put the task's files there, or set data.data_dir=DIR (or DE3_GLUE_DIR=DIR) "
            "to a folder that holds them"
        )
    return [f"{line} (the hub is unreachable: {reason})" for line in missing]
