"""The scikit-learn digits examples run through their main(argv): short runs that must learn."""

import sys

import denoise
import digits
import numpy as np
import pytest
from helpers import png_size

pytestmark = pytest.mark.slow  # each trains on the digits for a few epochs


def test_digits_mlp_learns_and_plots(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    results = digits.main(["--models", "mlp", "--seeds", "1", "--epochs", "5", "--plot", str(tmp_path)])
    out = capsys.readouterr().out
    assert set(results) == {"mlp"}
    assert results["mlp"]["test_acc"].shape == (1,)
    assert results["mlp"]["test_acc"][0] > 90, results["mlp"]["test_acc"]
    assert results["mlp"]["train_acc"][0] > 90, results["mlp"]["train_acc"]
    rows = [line.split() for line in out.splitlines()]
    assert ["model", "epochs", "test", "acc", "%"] == rows[1][:5]
    assert rows[2][:2] == ["mlp", "5"]
    for name in ("confusion_mlp.png", "misclassified_mlp.png"):
        width, height = png_size(tmp_path / name)
        assert width > 100 and height > 100, (name, width, height)


def test_digits_epochs_option():
    assert digits.epochs_arg("7") == {"mlp": 7, "cnn": 7}
    assert digits.epochs_arg("cnn=3") == {"mlp": digits.MODELS["mlp"][2], "cnn": 3}
    with pytest.raises(SystemExit):
        digits.main(["--epochs", "rnn=3"])


@pytest.mark.parametrize("script", [digits, denoise])
def test_without_sklearn_the_scripts_name_the_extra(script, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    with pytest.raises(SystemExit):
        script.main(["--seeds", "1"])
    assert 'pip install -e ".[examples]"' in capsys.readouterr().err


def test_denoise_gains_over_the_noisy_input(capsys):
    pytest.importorskip("sklearn")
    table = denoise.main(["--seeds", "1", "--epochs", "1"])
    out = capsys.readouterr().out
    assert table["input_psnr"].shape == (1,)
    # sigma 0.3, unclipped: the noisy inputs' MSE is about 0.09, 10.5 dB
    assert 10.0 < table["input_psnr"][0] < 11.0, table["input_psnr"]
    assert table["gain"][0] > 1.5, table  # 3.2 dB after its one epoch
    assert np.isfinite(table["runs"][0]["denoised"]).all()
    assert "not clipped" in out and "gain dB" in out
