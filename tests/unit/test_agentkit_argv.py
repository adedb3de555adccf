from agentkit.argv import token_in, without_token


def test_token_flag_is_found_in_both_spellings():
    assert token_in(["renderer", "run", "--consul-token", "s3cret", "--var", "a=b"]) == (2, 4, "s3cret")
    assert token_in(["renderer", "run", "--consul-token=s3cret"]) == (2, 3, "s3cret")
    assert token_in(["renderer", "run", "--consul-token-file", "/etc/t"]) is None
    assert token_in(["renderer", "run", "--consul-token"]) is None


def test_the_token_becomes_a_file_flag_on_an_inherited_descriptor():
    argv = ["registrar", "run", "--consul-token", "s3cret", "--cleanup"]
    assert without_token(argv, 5) == ["registrar", "run", "--consul-token-file", "/dev/fd/5", "--cleanup"]
    assert "s3cret" not in " ".join(without_token(["r", "--consul-token=s3cret"], 3))
