"""The committed config.json and tokenizer-layout goldens (GOLDENS.md) are what their scripts write today."""

import make_config_goldens
import make_tokenizer_variant_goldens


def test_config_golden_is_fresh(tmp_path):
    make_config_goldens.main(tmp_path / "resolved.json")
    assert (tmp_path / "resolved.json").read_text() == make_config_goldens.OUT.read_text()


def test_tokenizer_variant_goldens_are_fresh(tmp_path):
    make_tokenizer_variant_goldens.main(tmp_path / "variants.json")
    for name in ("variants.json", make_tokenizer_variant_goldens.TEKKEN_STYLE.name,
                 make_tokenizer_variant_goldens.NO_BOS_OUT.name):
        assert (tmp_path / name).read_text() == (make_tokenizer_variant_goldens.OUT.parent / name).read_text(), name
