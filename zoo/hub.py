"""Sharing models the Hugging Face way: ``save_pretrained``, ``from_pretrained``, ``push_to_hub``.

The methods come from huggingface_hub's own ``ModelHubMixin`` (as smp's models do); this module only says what a
zoo model folder holds: ``model.safetensors`` (the weights), ``config.json`` (the build arguments, class names and
palette that rebuild the model) and ``README.md``, a model card generated from them.

Offline, a download would sit through huggingface_hub's retries (half a minute or more) before failing.
:func:`use_cache_if_offline` asks once per process, with a short timeout, whether the Hub can be reached, and when
it cannot switches huggingface_hub to its offline mode (``HF_HUB_OFFLINE``): files in the local cache still load,
anything else fails at once with the error that says so. ``from_pretrained`` of a Hub id calls it first; any code
that downloads through huggingface_hub (timm's pretrained weights) can call it too.
"""

from __future__ import annotations

import functools
import json
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from huggingface_hub import ModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
from safetensors.torch import load_file, save_file

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PROBE_TIMEOUT_S = 3.0


@functools.cache
def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub's endpoint (``HF_ENDPOINT``) opens within ``timeout`` seconds (name
    lookup included); False in huggingface_hub's offline mode. Asked once per process."""
    if constants.is_offline_mode():
        return False
    url = urlparse(constants.ENDPOINT)
    address = (url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
    opened: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            opened.append(True)
        except OSError:
            opened.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # a name lookup has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(opened and opened[0])


def use_cache_if_offline() -> bool:
    """Switch huggingface_hub to its offline mode (the local cache only) when the Hub cannot be reached.

    Returns:
        True when offline (files not in the cache then fail at once instead of after retries).
    """
    if hub_reachable():
        return False
    constants.HF_HUB_OFFLINE = True
    return True


class HubMixin(
    ModelHubMixin,
    library_name="zoo",
    tags=["semantic-segmentation", "zoo", "pytorch"],
    pipeline_tag="image-segmentation",
):
    """``save_pretrained(DIR)``, ``from_pretrained(DIR_OR_HUB_ID)`` and ``push_to_hub(ID)`` for a model class with
    ``hub_config()`` (a JSON-able description) and ``from_hub_config(config)`` (its inverse)."""

    def hub_config(self) -> dict[str, Any]:  # pragma: no cover - provided by the model class
        raise NotImplementedError

    @classmethod
    def from_hub_config(cls, config: dict[str, Any]) -> Any:  # pragma: no cover - provided by the model class
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> Any:
        """The model saved in a folder by ``save_pretrained``, or pushed to the Hugging Face Hub under an id.

        Raises:
            FileNotFoundError: one line naming the folder or id when neither holds a zoo model; offline, at once
                (see :func:`use_cache_if_offline`).
        """
        offline = not Path(pretrained_model_name_or_path).is_dir() and use_cache_if_offline()
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (LocalEntryNotFoundError, RepositoryNotFoundError, EntryNotFoundError) as error:
            if offline:
                raise FileNotFoundError(
                    f"{pretrained_model_name_or_path}: the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached "
                    "and the model is not in the local cache; connect, or pass the folder written by save_pretrained"
                ) from None
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise FileNotFoundError(
                f"{pretrained_model_name_or_path}: neither a local folder nor a zoo model on the Hugging Face Hub "
                f"that could be reached ({first}); offline, pass the folder written by save_pretrained"
            ) from None

    def _save_pretrained(self, save_directory: Path) -> None:
        config = self.hub_config()
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(save_directory / WEIGHTS_NAME), metadata={"format": "pt"})
        (save_directory / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        (save_directory / "README.md").write_text(model_card(config))

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        **model_kwargs: Any,
    ) -> Any:
        folder = Path(model_id)
        if folder.is_dir():
            files = [folder / CONFIG_NAME, folder / WEIGHTS_NAME]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"{model_id} is not a saved zoo model: {', '.join(missing)} missing")
        else:
            fetch = {"revision": revision, "cache_dir": cache_dir, "force_download": force_download, "token": token}
            files = [
                Path(hf_hub_download(model_id, name, local_files_only=local_files_only, **fetch))
                for name in (CONFIG_NAME, WEIGHTS_NAME)
            ]
        model = cls.from_hub_config(json.loads(files[0].read_text()))
        model.load_state_dict(load_file(str(files[1])))
        return model.eval()


def model_card(config: dict[str, Any]) -> str:
    """A model card (README.md with Hub metadata) from a model's ``hub_config()``."""
    args = config["build_args"]
    classes = config.get("class_names") or [str(i) for i in range(args["num_classes"])]
    lines = [
        "---",
        "library_name: zoo",
        "pipeline_tag: image-segmentation",
        "tags: [semantic-segmentation, zoo, pytorch]",
        "---",
        "",
        f"# {args['decoder']} / {args['encoder']} (output stride {args['output_stride']})",
        "",
        f"Semantic segmentation into {args['num_classes']} classes: {', '.join(classes)}.",
        "",
        "```python",
        "import zoo",
        'model = zoo.from_pretrained("THIS_REPO_OR_FOLDER")   # RGB in 0..1, N×3×H×W -> N×C×H×W logits',
        "```",
        "",
        "## Architecture",
        "",
        "```json",
        json.dumps(args, indent=2),
        "```",
    ]
    for title, key in (("Training data", "dataset"), ("Metrics", "metrics")):
        if config.get(key):
            lines += ["", f"## {title}", "", "```json", json.dumps(config[key], indent=2), "```"]
    return "\n".join(lines) + "\n"


__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "HubMixin", "hub_reachable", "model_card", "use_cache_if_offline"]
