"""Container attach plumbing: `weaved attach/detach/ps` (Weave's `vethwepl<pid>` ↔ `ethwe`).

The library API (all of it needs root, none of it needs the daemon):

    resolve_target(text, docker_url) -> Target
    attach(target, addresses, mtu, multicast_route) -> Attachment
    detach(target, addresses | None) -> Detached
    observe_attachments(docker_url, known) -> list[Attachment]
"""

from weaved.attach.model import Attachment, AttachmentState, Detached, Target, TargetKind
from weaved.attach.observe import observe_attachments
from weaved.attach.plumbing import attach, detach, detach_all, reassert, rebridge
from weaved.attach.target import TargetError, resolve_target

__all__ = [
    "Attachment",
    "AttachmentState",
    "Detached",
    "Target",
    "TargetError",
    "TargetKind",
    "attach",
    "detach",
    "detach_all",
    "observe_attachments",
    "reassert",
    "rebridge",
    "resolve_target",
]
