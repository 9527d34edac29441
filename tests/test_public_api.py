"""Every package's ``__all__`` resolves to a real object, and the lazily exporting packages stay light."""

import importlib
import subprocess
import sys

import pytest

PACKAGES = ("mmv_torch", "mmv_torch.models", "mmv_torch.data", "mmv_torch.data.media", "mmv_torch.data.text",
            "mmv_torch.data.tools", "mmv_torch.weights", "mmv_torch.train", "mmv_torch.eval", "mmv_torch.cli")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_exists(package):
    module = importlib.import_module(package)
    assert module.__all__, f"{package} exports nothing"
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert missing == []


def test_unknown_name_is_an_attribute_error():
    import mmv_torch.data

    with pytest.raises(AttributeError, match="no_such_name"):
        mmv_torch.data.no_such_name  # noqa: B018


def test_data_and_eval_packages_import_without_pyav_or_sklearn():
    code = ("import sys, mmv_torch.data, mmv_torch.eval; "
            "print(','.join(m for m in ('av', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
