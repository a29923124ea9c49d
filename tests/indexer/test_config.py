import argparse
from pathlib import Path

import pytest

from origin_id.indexer.config import Settings


def test_defaults_env_and_flags_in_that_order():
    env = {"ORIGIN_ID_PORT": "6000", "ORIGIN_ID_MAX_TOP_K": "50", "DATABASE_URL": "postgresql://x/y"}
    s = Settings.from_env(env)
    assert (s.port, s.max_top_k, s.database_url, s.default_top_k) == (6000, 50, "postgresql://x/y", 10)
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    args = parser.parse_args(["--port", "7000", "--data-dir", "/tmp/x"])
    s = Settings.from_env(env, **{k: v for k, v in vars(args).items()})
    assert (s.port, s.max_top_k, s.data_dir) == (7000, 50, Path("/tmp/x"))


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ValueError, match="ORIGIN_ID_PORT"):
        Settings.from_env({"ORIGIN_ID_PORT": "many"})


def test_message_limit_in_bytes():
    assert Settings.from_env({}, max_message_mib=3).max_message_bytes == 3 * 1024 * 1024
