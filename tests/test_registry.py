"""zoo.registry.Registry: registration, duplicates, lookups and listing."""

from __future__ import annotations

import pytest

from zoo.registry import Registry


def make() -> Registry:
    reg = Registry("widget")

    @reg.register("beta")
    def beta() -> str:
        return "b"

    reg.register("alpha")(lambda: "a")
    return reg


def test_register_and_get_returns_the_builder():
    reg = make()
    assert reg.get("beta")() == "b"
    assert reg.get("alpha")() == "a"


def test_register_returns_the_decorated_builder_unchanged():
    reg = Registry("widget")

    def build() -> int:
        return 1

    assert reg.register("one")(build) is build


def test_duplicate_name_raises():
    reg = make()
    with pytest.raises(KeyError, match="widget 'beta' is already registered"):
        reg.register("beta")(lambda: None)
    assert reg.get("beta")() == "b"  # the first entry stays


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError, match=r"unknown widget 'gamma'; valid names: alpha, beta"):
        make().get("gamma")


def test_names_contains_len_iter():
    reg = make()
    assert reg.names() == ["alpha", "beta"]
    assert list(reg) == ["alpha", "beta"]
    assert len(reg) == 2
    assert "alpha" in reg and "gamma" not in reg


def test_registries_are_independent():
    a, b = Registry("a"), Registry("b")
    a.register("x")(lambda: 1)
    assert "x" in a and "x" not in b


@pytest.mark.slow  # a fresh interpreter
def test_a_published_weight_prefix_imports_its_provider_on_first_lookup():
    """A fresh interpreter that imports only zoo.models finds "deeplab-tf:NAME" (its provider is imported then)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from zoo.models import build_model\n"
        "assert 'zoo.convert' not in sys.modules\n"
        "try:\n"
        "    build_model(weights='deeplab-tf:no_such_model')\n"
        "except KeyError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "unknown TF DeepLab model 'no_such_model'; known: " in out.stdout
    assert "xception65_voc_trainaug" in out.stdout


def test_a_provided_name_is_listed_before_its_provider_is_imported():
    reg = Registry("widget", providers={"lazy": "zoo.no_such_module"})
    assert reg.names() == ["lazy"]
    with pytest.raises(ModuleNotFoundError):
        reg.get("lazy")
