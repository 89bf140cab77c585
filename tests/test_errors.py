"""lib.errors: every refusal the kit defines is a KitError, so entry points print it in one line."""
import importlib
import inspect
import pkgutil

import lib
from lib.errors import KitError


def kit_modules():
    for info in pkgutil.walk_packages(lib.__path__, "lib."):
        if not info.name.endswith("__main__"):
            yield importlib.import_module(info.name)


def test_every_exception_class_the_kit_defines_is_a_kit_error():
    defined = {(m.__name__, name): cls for m in kit_modules() for name, cls in vars(m).items()
               if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == m.__name__}
    assert len(defined) >= 15, sorted(defined)  # the walk found the modules
    outside = sorted(f"{mod}.{name}" for (mod, name), cls in defined.items() if not issubclass(cls, KitError))
    assert not outside, f"refusals that would print a traceback: {outside}"


def test_kit_errors_keep_their_builtin_kind():
    from lib.config import ConfigError
    from lib.data.labels import LabelError
    from lib.data.prepare import DatasetMissing

    assert issubclass(ConfigError, ValueError) and issubclass(DatasetMissing, FileNotFoundError)
    assert str(LabelError("a.txt", 3, "bad")) == "a.txt:3: bad"
