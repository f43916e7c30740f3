"""The two dialects of the Realtime protocol: GA, and the deprecated beta.

Only the name lives here, for the settings and the providers to choose one; what differs
between them on the wire is `bridge.wire.realtime`'s business."""

from __future__ import annotations

from enum import StrEnum


class Dialect(StrEnum):
    GA = "ga"
    BETA = "beta"
