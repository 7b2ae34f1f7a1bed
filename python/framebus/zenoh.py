"""framebus over Eclipse Zenoh: frames between machines (docs/zenoh.md).

The same surface as the local channel, so code switches by one name::

    from framebus import zenoh
    pub = zenoh.Publisher("cams/0", config={"connect": {"endpoints": ["tcp/10.0.0.2:7447"]}})
    sub = zenoh.Subscriber("cams/0", config=...)
    frame = sub.recv(timeout=1.0)   # read-only Frame in a pool slot

``config`` is a Zenoh configuration: a dict, JSON5 text (starting with ``{``)
or a path to a file; ``None`` uses Zenoh's defaults (peer mode, multicast
scouting). The wire format (pixels in the payload, geometry in a JSON
attachment) lets plain zenoh-python and zenoh-c programs take part.
"""

try:
    from ._framebus import ZenohPublisher as Publisher
    from ._framebus import ZenohSubscriber as Subscriber
    from ._framebus import zenoh_init_log as init_log
except ImportError as e:  # built without the `zenoh` cargo feature
    raise ImportError(
        "framebus was built without Zenoh support (cargo feature `zenoh` of framebus-python)"
    ) from e

__all__ = ["Publisher", "Subscriber", "init_log"]
