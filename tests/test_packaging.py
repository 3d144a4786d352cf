"""`pip install .` ships the presets (from outside the checkout, count_params of gpt3-175b works), the PEP 561
marker and the console scripts."""

import site
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_install_ships_presets(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(ROOT)], check=True, cwd=tmp_path)
    # Dependencies (jax, flax, ...) come from this environment: a .pth line appends its site-packages after
    # the new venv's own, where the freshly built wheel of zoo sits.
    (venv_site,) = venv.glob("lib/python*/site-packages")
    (venv_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    out = subprocess.run(
        [str(python), "-c", "import zoo; print(zoo.__file__); print(zoo.count_params(zoo.get_config('gpt3-175b')))"],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert str(venv) in out[0], out[0]  # the installed copy, not the checkout
    assert int(out[1]) == 174_604_259_328  # exact count of Brown et al. 2020, Table 2.1's 175B row
    assert (venv_site / "zoo" / "py.typed").exists()
    # The console scripts ([project.scripts]) are installed; zoo-train and zoo-sample answer --help.
    for name in ("zoo-train", "zoo-sample", "zoo-evaluate", "zoo-export"):
        assert (venv / "bin" / name).exists(), name
    for name, expected in (("zoo-train", "--preset"), ("zoo-sample", "--prompt-file")):
        run = subprocess.run([str(venv / "bin" / name), "--help"], cwd=tmp_path, capture_output=True, text=True)
        assert run.returncode == 0 and expected in run.stdout, f"{name} --help: {run.stderr[-2000:]}"
