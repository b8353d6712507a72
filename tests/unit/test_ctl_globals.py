"""capsactl's global options (capsa.ctl.split_globals)."""

import pytest

from capsa.ctl import UsageError, split_globals


def test_hooks_dir_repeats_in_order_and_others_keep_the_last_value():
    options, rest = split_globals(["--hooks-dir", "/a", "--root=/r", "--hooks-dir=/b", "--root", "/s", "ps", "-a"])
    assert options == {"--hooks-dir": ["/a", "/b"], "--root": "/s"}
    assert rest == ["ps", "-a"]


def test_a_global_flag_without_its_value_is_an_error():
    with pytest.raises(UsageError, match="flag needs an argument: --hooks-dir"):
        split_globals(["--hooks-dir"])
