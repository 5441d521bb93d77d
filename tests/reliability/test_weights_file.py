"""M11: model.weights naming a file that is not weights exits 2 naming the key and the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.runs.test_trained import assert_user_error, run_cli

from cnnlab.errors import ConfigError
from cnnlab.models.weights import read_state_dict

NOT_WEIGHTS = {
    "passwd": b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n",
    "noise.pth": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "pickle_header.pt": b"\x80\x02}q\x00(X\x03\x00\x00\x00abc",  # a pickle cut short
    "text.safetensors": b"not a safetensors header",
    "empty.pth": b"",
}


@pytest.mark.parametrize("name", sorted(NOT_WEIGHTS))
def test_a_file_that_is_not_weights_is_a_config_error_naming_it(tmp_path: Path, name: str):
    path = tmp_path / name
    path.write_bytes(NOT_WEIGHTS[name])
    with pytest.raises(ConfigError, match=r"model\.weights: .*" + name):
        read_state_dict(path)


def test_run_with_a_text_file_as_weights_exits_2(tmp_path: Path, digits_yaml):
    passwd = tmp_path / "passwd"
    passwd.write_bytes(NOT_WEIGHTS["passwd"])
    config = digits_yaml(data={"color_mode": "rgb"})
    model = f"model={{backbone: resnet50, weights: {passwd}}}"
    result = run_cli("run", str(config), "--set", model)
    assert_user_error(result, "model.weights:", str(passwd), "is not a weights file")
    assert not (tmp_path / "runs" / "digits").exists()  # nothing trained, nothing left
