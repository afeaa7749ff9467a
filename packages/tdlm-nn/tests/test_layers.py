"""DiT layers: rotary positions are relative, adaLN-Zero blocks start as the identity."""

import torch

from tdlm_nn import DiTBlock, LayerNorm, apply_rotary, rotary_tables


def test_rotary_scores_depend_only_on_relative_position():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 16, generator=generator)
    cos, sin = rotary_tables(40, 16, 10_000.0, torch.device("cpu"))

    def score(query_position: int, key_position: int) -> torch.Tensor:
        x = torch.zeros(1, 40, 2, 1, 16)
        x[0, query_position, 0, 0], x[0, key_position, 1, 0] = q, k
        rotated = apply_rotary(x, cos, sin)
        return rotated[0, query_position, 0, 0] @ rotated[0, key_position, 1, 0]

    torch.testing.assert_close(score(3, 10), score(25, 32))
    torch.testing.assert_close(score(0, 0), q @ k)  # position 0 is not rotated
    assert not torch.isclose(score(3, 10), score(3, 11))


def test_rotation_preserves_norms():
    x = torch.randn(2, 9, 2, 3, 8)
    cos, sin = rotary_tables(9, 8, 10_000.0, torch.device("cpu"))
    torch.testing.assert_close(apply_rotary(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_adaln_zero_block_is_the_identity_at_initialisation():
    block = DiTBlock(32, 4, 16, 128, dropout=0.0)
    x, c = torch.randn(2, 7, 32), torch.randn(2, 16)
    cos, sin = rotary_tables(7, 8, 10_000.0, torch.device("cpu"))
    torch.testing.assert_close(block(x, c, cos, sin), x, rtol=0, atol=0)


def test_layer_norm_is_fp32_for_bf16_inputs():
    norm = LayerNorm(8)
    x = torch.randn(2, 3, 8).to(torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 3), atol=1e-5, rtol=0)
