"""`weaved reset`: remove what weaved can prove is its own, restore what it changed, and say
what it left alone.

Proof of ownership: the bridge by its alias, routes by protocol 87 on that bridge, container
veths and the namespaces' resolv.conf files by the attachment records in the state directory
(a resolv.conf also by its first line), sysctls by the record of their original values. A
`vethwepl777` nobody recorded, or a bridge `weave` without the alias, is not touched.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from weaved.attach import Attachment, TargetKind, detach_all, store
from weaved.attach.reobserve import STORE
from weaved.attach.weavedns import NETNS_ETC, remove_resolv_conf
from weaved.cni.plumbing import observe_veths as observe_cni_veths
from weaved.cni.records import STORE as CNI_STORE
from weaved.cni.records import load_records
from weaved.datapath.fastdp.netlink import remove_fastdp
from weaved.dataplane.kernel import KernelDataplane
from weaved.engine.reconcile import reset

log = logging.getLogger(__name__)

RESOLV_MARK = "# written by weaved"
NETNS_RUN = Path("/run/netns")


@dataclass
class ResetReport:
    writes: int = 0
    veths: list[str] = field(default_factory=list)
    resolv_confs: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)


def recorded_attachments(state_dir: Path) -> list[Attachment]:
    lost = "no container veth is removed"
    return list(store.load_records(state_dir / STORE, Attachment.from_json, lost).values())


def _written_by_weaved(path: Path) -> bool:
    try:
        with path.open() as fh:
            return fh.readline().startswith(RESOLV_MARK)
    except OSError:
        return False


def remove_resolv_confs(netns_names: set[str], etc: Path = NETNS_ETC) -> list[str]:
    """The files weaved wrote for the recorded namespaces, and those it wrote for namespaces
    that no longer exist; a file without weaved's first line is never removed."""
    removed = []
    candidates = set(netns_names)
    with contextlib.suppress(OSError):
        candidates |= {
            d.name for d in etc.iterdir() if d.is_dir() and not (NETNS_RUN / d.name).exists()
        }
    for name in sorted(candidates):
        path = etc / name / "resolv.conf"
        if _written_by_weaved(path):
            remove_resolv_conf(name)
            if not path.exists():
                removed.append(str(path))
    return removed


def run_reset(state_dir: Path) -> ResetReport:
    report = ResetReport()
    attachments = recorded_attachments(state_dir)
    report.veths = detach_all(names={a.veth for a in attachments})
    store.remove_records(state_dir / STORE)  # detached for good: nothing to repair later
    cni = state_dir / CNI_STORE  # the CNI plugin's veths are weaved's too
    recorded = {r.veth for r in load_records(cni).values() if r.veth} | set(observe_cni_veths())
    report.veths += detach_all(names=recorded)  # also those whose alias records them
    store.remove_records(cni)
    report.resolv_confs = remove_resolv_confs(
        {a.target.name for a in attachments if a.target.kind is TargetKind.NETNS}
    )
    remove_fastdp()
    dataplane = KernelDataplane(state_dir)
    try:
        foreign = dataplane.observe().foreign_bridge
        if foreign:
            report.left_alone.append(f"weave ({foreign}: not created by weaved)")
        report.writes = reset(dataplane).writes
        dataplane.originals.forget_vanished()  # the bridge's settings went with the bridge
    finally:
        dataplane.close()
    return report
