"""framebus: move big image and video frames through Python without copying them.

Every frame lives in a memfd-backed pool slot that NumPy, DLPack consumers,
Pillow, the X server, other processes and FFmpeg can all see without a copy.
"""

from ._framebus import (
    CaptureError,
    ChannelClosed,
    FFmpegError,
    Frame,
    FramebusError,
    FramePool,
    PoolClosed,
    PoolExhausted,
    VideoWriter,
    __version__,
    close,
    default_pool,
    formats,
    pipe,
    pipe_stats,
    sync,
)

__all__ = [
    "CaptureError",
    "ChannelClosed",
    "FFmpegError",
    "Frame",
    "FramePool",
    "FramebusError",
    "PoolClosed",
    "PoolExhausted",
    "VideoWriter",
    "__version__",
    "close",
    "default_pool",
    "formats",
    "pipe",
    "pipe_stats",
    "sync",
]
