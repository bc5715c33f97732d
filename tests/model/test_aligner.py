"""The Patch Aligning Layer and the alignment loss (spec section 4)."""

import pytest
import torch
import torch.nn.functional as F

from eve_vlm.model.aligner import PatchAligner, aligner_layers, alignment_loss


def test_layers_for_32_and_30():
    assert aligner_layers(32) == [32, 28, 24, 20, 16, 12, 8, 4, 0]
    assert aligner_layers(30) == [30, 26, 22, 18, 14, 10, 6, 2]
    assert len(aligner_layers(32)) == 9


def _randomised(aligner):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in aligner.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return aligner


def test_forward_matches_the_spec_formulas():
    d, ct, heads = 12, 8, 2
    aligner = _randomised(PatchAligner(d, ct, num_layers=8, layer_interval=4, heads=heads))
    assert aligner.layers == [8, 4, 0]
    states = [torch.randn(5, d) for _ in aligner.layers]
    got = aligner(states)
    # independent computation: LN+Linear per layer, last layer queries the others, scale Ct**-0.5
    projected = [F.layer_norm(s, (d,), p[0].weight, p[0].bias) @ p[1].weight.T
                 for s, p in zip(states, aligner.layer_proj)]
    query, others = projected[0], torch.stack(projected[1:], 1)  # (N, Ct), (N, K, Ct)
    attn = torch.empty_like(query)
    hd = ct // heads
    for h in range(heads):
        cols = slice(h * hd, (h + 1) * hd)
        w = torch.softmax(torch.einsum("nc,nkc->nk", query[:, cols], others[:, :, cols]) * ct**-0.5, -1)
        attn[:, cols] = torch.einsum("nk,nkc->nc", w, others[:, :, cols])
    expected = states[0] @ aligner.input_proj.weight.T + aligner.input_proj.bias
    expected = expected + attn @ aligner.output_proj.weight.T + aligner.output_proj.bias
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_wrong_number_of_layers_is_an_error():
    aligner = PatchAligner(12, 8, num_layers=8, heads=2)
    with pytest.raises(ValueError, match="expects 3 layers"):
        aligner([torch.randn(4, 12)])


def test_save_and_load(tmp_path):
    aligner = _randomised(PatchAligner(12, 8, num_layers=8, heads=2))
    aligner.save_pretrained(tmp_path)
    loaded = PatchAligner.from_pretrained(tmp_path)
    assert loaded.layers == aligner.layers
    for k, v in aligner.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    with pytest.raises(FileNotFoundError, match="aligner_config.json"):
        PatchAligner.from_pretrained(tmp_path / "nowhere")


def test_alignment_loss_is_one_minus_cosine_averaged_per_image_then_over_images():
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    image_index = torch.tensor([0, 0, 1])
    # image 0: distances 0 and 1 -> 0.5; image 1: cosine -1 -> 2; mean over images -> 1.25
    assert alignment_loss(student, teacher, image_index).item() == pytest.approx(1.25)
    # an image without patches (index 1 here) does not count
    assert alignment_loss(student, teacher, torch.tensor([0, 0, 2])).item() == pytest.approx(1.25)
    # equals half the MSE of L2-normalised vectors, per image
    mse = ((F.normalize(student, dim=-1) - F.normalize(teacher, dim=-1)) ** 2).sum(-1) / 2
    assert mse.tolist() == pytest.approx([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="differ in shape"):
        alignment_loss(student, teacher[:, :1], image_index)
