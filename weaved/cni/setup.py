"""`weaved setup-cni` (Weave's `weave setup-cni`): the conflist in the runtime's conf directory
and the plugin under Weave's names in its bin directory. A file there that weaved did not
write is left alone (said, not replaced)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from weaved.errors import DependencyError

CONF_NAME = "10-weave.conflist"
PLUGIN_NAMES = ("weave-net", "weave-ipam")
CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "weave",
    "plugins": [
        {"name": "weave", "type": "weave-net", "hairpinMode": True},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    ],
}


def plugin_executable() -> Path:
    """The installed `weaved-cni` (beside the running `weaved` first)."""
    beside = Path(sys.argv[0]).resolve().parent / "weaved-cni"
    if beside.is_file():
        return beside
    found = shutil.which("weaved-cni")
    if found is None:
        raise DependencyError(
            "weaved-cni is not installed (it comes with the weaved package)\n"
            "  hint: reinstall weaved, or `pip install` it so its console scripts exist"
        )
    return Path(found).resolve()


def setup_cni(conf_dir: Path, bin_dir: Path, plugin: Path) -> list[str]:
    """Install; returns one line per thing done or left alone."""
    done: list[str] = []
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in PLUGIN_NAMES:
        link = bin_dir / name
        if link.is_symlink() and Path(os.readlink(link)) == plugin:
            continue
        if link.exists() and not link.is_symlink():
            done.append(f"left {link} alone: it is not weaved's (remove it to use weaved)")
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(plugin)
        done.append(f"{link} -> {plugin}")
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = conf_dir / CONF_NAME
    text = json.dumps(CONFLIST, indent=4) + "\n"
    if conf.exists() and conf.read_text() != text:
        done.append(f"left {conf} alone: it differs from weaved's (remove it to replace it)")
    elif not conf.exists():
        conf.write_text(text)
        done.append(f"wrote {conf}")
    return done
