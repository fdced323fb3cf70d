"""Tracking objects and parts through videos (``vlpart track``): association
(:mod:`.associate`), the video run and its outputs (:mod:`.video`), SAM 2 mask propagation
(:mod:`.sam2`)."""

from vlpart.inference.tracking.associate import (
    FrameTracker as FrameTracker,
)
from vlpart.inference.tracking.associate import (
    PartTracker as PartTracker,
)
from vlpart.inference.tracking.associate import (
    TrackedFrame as TrackedFrame,
)

__all__ = ["FrameTracker", "PartTracker", "TrackedFrame"]
