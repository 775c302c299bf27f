"""Where the installed config/ and launch/ files are, whichever way the package was installed.

colcon puts them in the package's share directory (found through the ament index);
``pip install`` carries them as the data packages diffmf_ros.config and diffmf_ros.launch,
since pip installs no data_files; an editable install or a checkout reads the repo's folders.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "diffmf_ros"


def _ament_share() -> Path | None:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except (PackageNotFoundError, ValueError, LookupError, OSError):  # OSError: no AMENT_PREFIX_PATH
        return None


def share_file(kind: str, name: str) -> Path:
    """Path of ``<share>/<kind>/<name>`` (kind: 'config' or 'launch'); FileNotFoundError names what was tried."""
    tried = []
    share = _ament_share()
    if share is not None:
        candidate = share / kind / name
        if candidate.is_file():
            return candidate
        tried.append(str(candidate))
    spec = importlib.util.find_spec(f"{PACKAGE}.{kind}")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / name
        if candidate.is_file():
            return candidate
        tried.append(str(candidate))
    where = ", ".join(tried) or "nowhere"
    source_tree = Path(__file__).resolve().parents[1] / kind / name  # editable install or a checkout
    if source_tree.is_file():
        return source_tree
    tried.append(str(source_tree))
    raise FileNotFoundError(f"{kind}/{name} is not installed with {PACKAGE} (looked in: {where})")


def default_params_file() -> Path:
    return share_file("config", "diffmf.yaml")
