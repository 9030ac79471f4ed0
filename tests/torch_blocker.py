"""Python source that makes the training stack unimportable, as after a plain ``pip install .``.

Tests prepend it to a ``python -c`` script so the check runs in a fresh interpreter; the script
can then list ``leaked()`` modules, which must be empty.
"""

PREAMBLE = r'''
import sys

BLOCKED = ("torch", "torchvision", "cxr_train")


class Blocker:
    """Raise on any import of the training stack instead of finding it."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None


def leaked():
    return sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)


sys.meta_path.insert(0, Blocker())
'''
