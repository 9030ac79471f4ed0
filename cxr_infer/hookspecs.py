"""Hook specifications of the inference side (pluggy project ``cxr``).

Each hook receives a ``register`` callback instead of returning a list (the simonw/llm pattern):
a plugin can register several things, and the caller can tell which plugin registered what.
Built-in readers and writers are registered through these same hooks.
"""

import pluggy

hookspec = pluggy.HookspecMarker("cxr")
hookimpl = pluggy.HookimplMarker("cxr")


@hookspec
def register_readers(register):
    """Register input readers.

    Call ``register(name, read, extensions=(".png", ...), sniff=None, reduces=False)`` where
    ``read(path)`` returns the decoded image as a numpy array (2-D grayscale, or H x W x 3/4
    BGR[A]) or raises an exception whose message says why the file cannot be read, and
    ``sniff(head: bytes)`` optionally claims files by content whatever their extension. With
    ``reduces=True``, ``read`` is also called as ``read(path, min_side=S, min_long_side=L)``
    and may return a smaller image whose short and long sides are at least S and L (a decoder
    that can skip work on files much larger than the model needs).
    """


@hookspec
def register_writers(register):
    """Register result writers.

    Call ``register(name, writer_factory)`` where ``writer_factory(path, columns)`` returns an
    object with ``write(row: dict)`` and ``close()``. Rows arrive one per input, in input order.
    """


@hookspec
def process_result(result):
    """See each result row (a dict) before it is written; modify it in place to add fields.

    Raising marks that row as failed (its error column names the plugin); the batch goes on.
    """
