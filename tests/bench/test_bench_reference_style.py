"""The reference-style stand-in computes exactly what our batched code computes (only the style differs)."""

import torch
from bench.reference_style import reference_style_align_loss, reference_style_tokens
from bench.vision_train import build, ours_loss, reference_loss

from eve_vlm.model.aligner import alignment_loss
from eve_vlm.model.patch_embed import image_grid
from eve_vlm.train.losses import gather_patch_states


def test_reference_style_tokens_equal_ours():
    side = build(batch=3, image_size=84, width=32, heads=4, llm_width=48, teacher_width=16, llm_layers=8)
    ours = side.projector(side.pel(side.pixel_values))
    reference = reference_style_tokens(side.pel, side.projector, side.pixel_values)
    assert len(reference) == 3
    torch.testing.assert_close(torch.stack(reference), ours, rtol=1e-5, atol=1e-5)


def test_reference_style_aligner_loss_and_gradients_equal_ours_with_distinct_layers():
    side = build(batch=2, image_size=56, width=32, heads=4, llm_width=48, teacher_width=16, llm_layers=9)
    b, h, w = 2, *image_grid(56, 56)
    t = 1 + h * (w + 1)
    states = [torch.randn(b, t, 48, requires_grad=True) for _ in side.aligner.layers]
    grid = torch.arange(1, t).view(h, w + 1)[:, :w].reshape(-1)
    positions = (grid[None] + t * torch.arange(b)[:, None]).reshape(-1, 1)
    ours = alignment_loss(side.aligner(gather_patch_states(tuple(states), list(range(len(states))), positions)),
                          side.teacher, torch.arange(b).repeat_interleave(h * w))
    ours_grads = torch.autograd.grad(ours, states)
    teacher = list(side.teacher.view(b, h * w, -1).unbind(0))
    reference = reference_style_align_loss(side.aligner, states, [0] * b, [(h, w)] * b, teacher)
    reference_grads = torch.autograd.grad(reference, states)
    torch.testing.assert_close(reference, ours)
    for a, r in zip(ours_grads, reference_grads):
        torch.testing.assert_close(r, a)


def test_vision_train_losses_and_parameter_gradients_agree():
    side = build(batch=2, image_size=56, width=32, heads=4, llm_width=48, teacher_width=16, llm_layers=8)
    grads = []
    for loss_fn in (ours_loss, reference_loss):
        loss_fn(side).backward()
        grads.append([p.grad.clone() for p in side.parameters()])
        side.zero_grad()
    for a, r in zip(*grads):
        torch.testing.assert_close(r, a, rtol=1e-4, atol=1e-6)


def test_full_step_reference_path_equals_ours_in_loss_and_every_gradient():
    from bench import train_step

    step = train_step.build(batch=2, image_size=56, width=32, llm_width=64, layers=5, vocab=300, teacher_width=16,
                            prompt_tokens=3, question_tokens=4, answer_tokens=5)
    losses, grads = [], []
    for loss_fn in (train_step.ours_loss, train_step.reference_loss):
        loss = loss_fn(step)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in step.stage.named_parameters() if p.grad is not None})
        step.zero_grad()
    torch.testing.assert_close(losses[1], losses[0])
    assert grads[0].keys() == grads[1].keys() and any(n.startswith("aligner.") for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)
