"""framebus: move big image and video frames through Python without copying them.

Every frame lives in a memfd-backed pool slot that NumPy, DLPack consumers,
Pillow, the X server, other processes and FFmpeg can all see without a copy.
"""

from ._framebus import (
    CaptureError,
    ChannelClosed,
    Frame,
    FramebusError,
    FramePool,
    PoolClosed,
    PoolExhausted,
    __version__,
    default_pool,
    formats,
)

__all__ = [
    "CaptureError",
    "ChannelClosed",
    "Frame",
    "FramePool",
    "FramebusError",
    "PoolClosed",
    "PoolExhausted",
    "__version__",
    "default_pool",
    "formats",
]
