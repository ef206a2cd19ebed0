"""`sicot demo --quick` end to end in a fresh process, as a user sees it (slow, a few minutes):
no TensorFlow/absl/CUDA noise and no library warning on the terminal, every answer marked."""
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

# What start-up noise and library warnings look like on a terminal.
NOISE = re.compile(
    r"WARNING|Warning:|warnings\.warn|^[WEIF]\d{4} |absl|cuda|cuFFT|cuDNN|cuBLAS|TF-TRT|oneDNN|"
    r"tensorflow/|ran out of data|Traceback", re.IGNORECASE | re.MULTILINE)


def test_demo_prints_marked_answers_and_no_library_noise(tmp_path):
    workdir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items()
           if k not in ("SICOT_LOG_FILE", "TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    done = subprocess.run([sys.executable, "-m", "sicot.cli", "demo", "--quick",
                           "--workdir", str(workdir)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, timeout=1800)
    out = done.stdout
    assert done.returncode == 0, out[-4000:]
    assert NOISE.search(out) is None, NOISE.search(out).group(0) + "\n" + out[-4000:]

    answers = re.findall(r"^  photo (?:only|\+ title) \((?:gRPC|REST)\): .*\b(RIGHT|WRONG)",
                         out, re.MULTILINE)
    assert len(answers) == 4, out[-4000:]  # two queries, each photo only and photo + title
    assert "many-shot class" in out and "few-shot class" in out
    assert "picked from `sicot evaluate`" in out
    # readable class names beside the SKU ids
    assert re.search(r'sku-[0-9a-f]{12} "[a-z][a-z -]+ [A-Z]\w+"', out), out[-4000:]
    # the noise went to the log file the demo named, once
    log = workdir / "logs" / "sicot-demo.log"
    assert out.count(str(log)) == 1 and log.stat().st_size > 0
